//! The WireGuard cross-platform userspace API (UAPI): `get=1` and `set=1`
//! over a device's Unix socket, as `wg` speaks it to wireguard-go and to
//! shoal's own device ([`super::device`]).
//!
//! Spoken here rather than through wireguard-control's userspace backend
//! because that one starts a `wireguard-go` of its own when a socket is
//! missing (a device shoal did not make).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipnet::Ipv4Net;
use wireguard_control::Key;

use super::{uapi_socket, MeshConfig, MeshStep, Peer};
use crate::error::Error;

/// How long one UAPI exchange may take.
const TIMEOUT: Duration = Duration::from_secs(5);

fn connect(dev: &str) -> Result<UnixStream, Error> {
    let path = uapi_socket(dev);
    let s = UnixStream::connect(&path).map_err(Error::io(format!(
        "userspace WireGuard {dev}: connect to its UAPI socket {} (is the `shoal-overlay run` hosting it gone?)",
        path.display()
    )))?;
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
        .map_err(Error::io(format!("UAPI {}: set timeouts", path.display())))?;
    Ok(s)
}

/// Sends `request` and returns the answer's `key=value` lines, failing on
/// a non-zero `errno`.
fn exchange(dev: &str, request: &str, what: &str) -> Result<Vec<(String, String)>, Error> {
    let mut s = connect(dev)?;
    s.write_all(request.as_bytes())
        .map_err(Error::io(format!("{what}: write to the UAPI socket")))?;
    let mut pairs = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.map_err(Error::io(format!("{what}: read the UAPI answer")))?;
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::Conflict(format!(
                "{what}: UAPI answered a line without `=`: {line:?}"
            )));
        };
        if k == "errno" {
            return match v {
                "0" => Ok(pairs),
                e => Err(Error::Conflict(format!(
                    "{what}: the device answered errno {e}"
                ))),
            };
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Err(Error::Conflict(format!(
        "{what}: the UAPI answer ended without errno"
    )))
}

fn hex_key(what: &str, v: &str) -> Result<Key, Error> {
    Key::from_hex(v)
        .map_err(|_| Error::Conflict(format!("{what}: UAPI key {v:?} is not 32 hex bytes")))
}

/// True when the device answers a `get` on its socket.
pub fn answers(dev: &str) -> bool {
    uapi_socket(dev).exists() && get(dev).is_ok()
}

/// Reads the configuration; equals `wg showconf DEV`.
pub fn get(dev: &str) -> Result<MeshConfig, Error> {
    let what = format!("wg show {dev}");
    let mut config = MeshConfig {
        public_key: None,
        listen_port: 0,
        peers: BTreeMap::new(),
    };
    let mut current: Option<String> = None;
    for (k, v) in exchange(dev, "get=1\n\n", &what)? {
        match k.as_str() {
            "private_key" => config.public_key = Some(hex_key(&what, &v)?.get_public().0),
            "listen_port" => {
                config.listen_port = v.parse().map_err(|_| {
                    Error::Conflict(format!("{what}: listen_port {v:?} is not a port"))
                })?
            }
            "public_key" => {
                let key = hex_key(&what, &v)?.to_base64();
                config.peers.insert(
                    key.clone(),
                    Peer {
                        endpoint: None,
                        allowed_ips: Default::default(),
                    },
                );
                current = Some(key);
            }
            "endpoint" | "allowed_ip" => {
                let Some(peer) = current.as_ref().and_then(|c| config.peers.get_mut(c)) else {
                    continue;
                };
                if k == "endpoint" {
                    if let Ok(SocketAddr::V4(a)) = v.parse::<SocketAddr>() {
                        peer.endpoint = Some(a);
                    }
                } else if let Ok(net) = v.parse::<Ipv4Net>() {
                    peer.allowed_ips.insert(net);
                }
            }
            _ => {}
        }
    }
    Ok(config)
}

/// Writes one peer section that sets it.
fn set_peer(out: &mut String, key: &Key, endpoint: Option<SocketAddrV4>, allowed_ips: &[Ipv4Net]) {
    let _ = writeln!(out, "public_key={}", hex(key));
    if let Some(e) = endpoint {
        let _ = writeln!(out, "endpoint={e}");
    }
    let _ = writeln!(out, "replace_allowed_ips=true");
    for a in allowed_ips {
        let _ = writeln!(out, "allowed_ip={a}");
    }
}

fn hex(key: &Key) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies a configuration step (`SetInterface`, `SetPeer`, `RemovePeer`)
/// with one `set=1` exchange. Peers are changed in place, never replaced,
/// so a changed endpoint or allowed IP keeps the peer's session.
pub fn set(step: &MeshStep) -> Result<(), Error> {
    let what = step.to_string();
    let mut req = String::from("set=1\n");
    let dev = match step {
        MeshStep::SetInterface {
            dev,
            private_key,
            listen_port,
            ..
        } => {
            let _ = writeln!(req, "private_key={}", hex(&Key(private_key.0)));
            let _ = writeln!(req, "listen_port={listen_port}");
            dev
        }
        MeshStep::SetPeer {
            dev,
            public_key,
            endpoint,
            allowed_ips,
            ..
        } => {
            // changed in place: the peer keeps its session
            let key = super::control::public_key(dev, public_key)?;
            set_peer(&mut req, &key, *endpoint, allowed_ips);
            dev
        }
        MeshStep::RemovePeer {
            dev, public_key, ..
        } => {
            let key = super::control::public_key(dev, public_key)?;
            let _ = writeln!(req, "public_key={}\nremove=true", hex(&key));
            dev
        }
        other => {
            return Err(Error::Conflict(format!(
                "`{other}` is not a WireGuard configuration change"
            )))
        }
    };
    req.push('\n');
    exchange(dev, &req, &what).map(drop)
}
