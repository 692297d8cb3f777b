//! The device's side of the cross-platform userspace API (UAPI), as
//! wireguard-go serves it on `/var/run/wireguard/<dev>.sock`: `get=1`
//! answers the configuration, `set=1` changes it; each answer ends with
//! `errno=N` and a blank line. [`super::super::uapi`] and the `wg` tool
//! are its clients.
//!
//! A `set` is parsed whole ([`SetRequest::parse`]), then applied to a copy
//! of the [`Snapshot`] that replaces the live one: the datapath sees all of
//! a request or none of it. Known peers change in place: a new endpoint or
//! new allowed IPs keep the session; a new preshared key or keepalive
//! starts a fresh one. As in wireguard-go, peers may come before the
//! private key; the device sends and accepts nothing until it has one.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use boringtun::x25519::StaticSecret;
use ipnet::IpNet;
use nix::libc::{EINVAL, EIO, EPROTO};

use super::peers::{Identity, Peer, Snapshot};
use super::{sys, Shared};

/// How long one client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One peer section of a `set=1`.
#[derive(Debug, Default, PartialEq)]
pub struct PeerChange {
    /// `public_key=`.
    pub public: [u8; 32],
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: change the peer only if it exists.
    pub update_only: bool,
    /// `preshared_key=`; all zeros clears it.
    pub psk: Option<[u8; 32]>,
    /// `endpoint=`.
    pub endpoint: Option<SocketAddrV4>,
    /// `persistent_keepalive_interval=`.
    pub keepalive: Option<u16>,
    /// `replace_allowed_ips=true`.
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines.
    pub allowed_ips: Vec<IpNet>,
}

/// A whole `set=1` request.
#[derive(Debug, Default, PartialEq)]
pub struct SetRequest {
    /// `private_key=`; all zeros removes the key.
    pub private_key: Option<[u8; 32]>,
    /// `listen_port=`.
    pub listen_port: Option<u16>,
    /// `fwmark=`.
    pub fwmark: Option<u32>,
    /// `replace_peers=true`.
    pub replace_peers: bool,
    /// The peer sections, in order.
    pub peers: Vec<PeerChange>,
}

fn hex_key(v: &str) -> Result<[u8; 32], i32> {
    if v.len() != 64 || !v.is_ascii() {
        return Err(EINVAL);
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).map_err(|_| EINVAL)?;
    }
    Ok(key)
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse<T: std::str::FromStr>(v: &str) -> Result<T, i32> {
    v.parse().map_err(|_| EINVAL)
}

fn flag(v: &str) -> Result<bool, i32> {
    parse::<bool>(v)
}

impl SetRequest {
    /// Parses the lines after `set=1`, up to (not including) the blank
    /// line; an error is the errno to answer.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<SetRequest, i32> {
        let mut req = SetRequest::default();
        for line in lines {
            let (k, v) = line.split_once('=').ok_or(EPROTO)?;
            if k == "public_key" {
                req.peers.push(PeerChange {
                    public: hex_key(v)?,
                    ..Default::default()
                });
                continue;
            }
            let Some(peer) = req.peers.last_mut() else {
                match k {
                    "private_key" => req.private_key = Some(hex_key(v)?),
                    "listen_port" => req.listen_port = Some(parse(v)?),
                    "fwmark" => req.fwmark = Some(parse(v)?),
                    "replace_peers" => req.replace_peers = flag(v)?,
                    _ => return Err(EINVAL),
                }
                continue;
            };
            match k {
                "remove" => peer.remove = flag(v)?,
                "update_only" => peer.update_only = flag(v)?,
                "preshared_key" => peer.psk = Some(hex_key(v)?),
                "endpoint" => match parse::<SocketAddr>(v)? {
                    SocketAddr::V4(a) => peer.endpoint = Some(a),
                    SocketAddr::V6(_) => return Err(EINVAL),
                },
                "persistent_keepalive_interval" => peer.keepalive = Some(parse(v)?),
                "replace_allowed_ips" => peer.replace_allowed_ips = flag(v)?,
                "allowed_ip" => peer.allowed_ips.push(parse(v)?),
                "protocol_version" if v == "1" => {}
                _ => return Err(EINVAL),
            }
        }
        Ok(req)
    }

    /// The snapshot `current` becomes with this request applied. A new
    /// port or mark binds a new socket in the calling thread's namespace.
    pub fn apply(&self, current: &Snapshot) -> Result<Snapshot, i32> {
        let mut s = current.clone();
        let port = self.listen_port.unwrap_or(s.listen_port);
        let mark = self.fwmark.unwrap_or(s.fwmark);
        if s.socket.is_none() || port != s.listen_port || mark != s.fwmark {
            let sock = sys::bind_udp(port, mark).map_err(|e| e.raw_os_error().unwrap_or(EIO))?;
            s.listen_port = sock.local_addr().map_err(|_| EIO)?.port();
            s.fwmark = mark;
            s.socket = Some(Arc::new(sock));
        }
        match self.private_key {
            Some(k) if k == [0; 32] => s.identity = None,
            Some(k) if s.identity.as_ref().map(|i| i.secret.to_bytes()) != Some(k) => {
                let id = Identity::new(StaticSecret::from(k));
                for p in s.peers.values() {
                    p.tunn().set_static_private(
                        id.secret.clone(),
                        id.public,
                        Some(Arc::clone(&id.limiter)),
                    );
                }
                s.identity = Some(id);
            }
            _ => {}
        }
        if self.replace_peers {
            s.peers.clear();
            s.by_index.clear();
            s.allowed.clear();
        }
        for change in &self.peers {
            change.apply(&mut s)?;
        }
        Ok(s)
    }
}

impl PeerChange {
    fn apply(&self, s: &mut Snapshot) -> Result<(), i32> {
        if self.remove {
            s.remove(&self.public);
            return Ok(());
        }
        let existing = s.peers.get(&self.public).cloned();
        if existing.is_none() && self.update_only {
            return Ok(());
        }
        let psk = match self.psk {
            Some(k) if k == [0; 32] => None,
            Some(k) => Some(k),
            None => existing.as_ref().and_then(|p| p.psk),
        };
        let keepalive = self
            .keepalive
            .or(existing.as_ref().map(|p| p.keepalive))
            .unwrap_or(0);
        let peer = match existing {
            Some(p) if p.psk == psk && p.keepalive == keepalive => p,
            old => {
                let endpoint = old.and_then(|p| p.endpoint());
                let p = Arc::new(Peer::new(
                    s.identity.as_ref(),
                    self.public,
                    s.free_index(),
                    keepalive,
                    psk,
                    endpoint,
                ));
                s.insert(Arc::clone(&p));
                p
            }
        };
        if let Some(e) = self.endpoint {
            peer.set_endpoint(e);
        }
        if self.replace_allowed_ips {
            s.disallow_all(&peer);
        }
        for net in &self.allowed_ips {
            s.allow(*net, &peer);
        }
        Ok(())
    }
}

/// The `get=1` answer for `s`, without the closing `errno` line.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    if let Some(id) = &s.identity {
        let _ = writeln!(out, "private_key={}", hex(&id.secret.to_bytes()));
    }
    let _ = writeln!(out, "listen_port={}", s.listen_port);
    if s.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", s.fwmark);
    }
    let mut peers: Vec<&Arc<Peer>> = s.peers.values().collect();
    peers.sort_by_key(|p| p.public);
    for p in peers {
        let _ = writeln!(out, "public_key={}", hex(&p.public));
        let _ = writeln!(out, "preshared_key={}", hex(&p.psk.unwrap_or([0; 32])));
        let _ = writeln!(out, "protocol_version=1");
        if let Some(e) = p.endpoint() {
            let _ = writeln!(out, "endpoint={e}");
        }
        let (since, tx, rx, ..) = p.tunn().stats();
        let at = since
            .and_then(|d| SystemTime::now().checked_sub(d))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", at.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", at.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={tx}\nrx_bytes={rx}");
        let _ = writeln!(out, "persistent_keepalive_interval={}", p.keepalive);
        for net in s.allowed_of(p) {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out
}

/// Serves one client connection: one `get=1` or `set=1` exchange.
pub fn handle(shared: &Shared, conn: UnixStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut lines = Vec::new();
    for line in BufReader::new(&conn).lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let (op, rest) = lines
        .split_first()
        .map_or(("", &[][..]), |(o, r)| (o.as_str(), r));
    let (body, errno) = match op {
        "get=1" => (render(&shared.snapshot()), 0),
        "set=1" => {
            let outcome = SetRequest::parse(rest.iter().map(String::as_str))
                .and_then(|req| shared.update(|s| req.apply(s)));
            (String::new(), outcome.err().unwrap_or(0))
        }
        _ => (String::new(), EPROTO),
    };
    (&conn).write_all(format!("{body}errno={errno}\n\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::PublicKey;

    const K1: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    #[test]
    fn parses_a_wg_set_request() {
        let req = SetRequest::parse([
            &format!("private_key={K1}") as &str,
            "listen_port=51820",
            "replace_peers=true",
            &format!("public_key={K2}"),
            "endpoint=198.18.0.2:51820",
            "replace_allowed_ips=true",
            "allowed_ip=100.96.0.2/32",
            "persistent_keepalive_interval=25",
        ])
        .unwrap();
        assert_eq!(req.private_key, Some([1; 32]));
        assert_eq!(req.listen_port, Some(51820));
        assert!(req.replace_peers);
        let p = &req.peers[0];
        assert_eq!(p.public, [2; 32]);
        assert_eq!(p.endpoint, Some("198.18.0.2:51820".parse().unwrap()));
        assert!(p.replace_allowed_ips && !p.remove);
        assert_eq!(
            p.allowed_ips,
            vec!["100.96.0.2/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(p.keepalive, Some(25));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(SetRequest::parse(["bogus=1"]), Err(EINVAL));
        assert_eq!(SetRequest::parse(["no equals sign"]), Err(EPROTO));
        assert_eq!(SetRequest::parse(["private_key=abc"]), Err(EINVAL));
        let peer_line = format!("public_key={K2}");
        assert_eq!(
            SetRequest::parse([peer_line.as_str(), "endpoint=[::1]:5"]),
            Err(EINVAL)
        );
        assert_eq!(
            SetRequest::parse([peer_line.as_str(), "private_key=00"]),
            Err(EINVAL),
            "a device key inside a peer section"
        );
    }

    #[test]
    fn peers_change_in_place_and_render_like_wireguard_go() {
        let base = Snapshot {
            socket: Some(Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())),
            ..Default::default()
        };
        let peer_line = format!("public_key={K2}");
        let set = |s: &Snapshot, lines: &[&str]| SetRequest::parse(lines.iter().copied())?.apply(s);
        let key_line = format!("private_key={K1}");
        let s = set(
            &base,
            &[
                &key_line,
                &peer_line,
                "endpoint=198.18.0.2:51820",
                "allowed_ip=100.96.0.2/32",
            ],
        )
        .unwrap();
        let first = Arc::clone(&s.peers[&[2; 32]]);
        let s = set(
            &s,
            &[
                &peer_line,
                "endpoint=198.18.0.3:51999",
                "replace_allowed_ips=true",
                "allowed_ip=100.96.0.3/32",
            ],
        )
        .unwrap();
        let same = &s.peers[&[2; 32]];
        assert!(Arc::ptr_eq(&first, same), "changed in place");
        let text = render(&s);
        assert!(
            text.starts_with(&format!("private_key={K1}\nlisten_port=")),
            "{text}"
        );
        assert!(text.contains(&format!("public_key={K2}\n")), "{text}");
        assert!(text.contains("endpoint=198.18.0.3:51999\n"), "{text}");
        assert!(text.contains("allowed_ip=100.96.0.3/32\n"), "{text}");
        assert!(!text.contains("100.96.0.2"), "{text}");
        assert!(text.contains("last_handshake_time_sec=0\n"), "{text}");
        let s = set(&s, &[&peer_line, "persistent_keepalive_interval=25"]).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &s.peers[&[2; 32]]),
            "a new keepalive: new session"
        );
        assert_eq!(s.allowed.len(), 1, "allowed IPs kept");
        let s = set(&s, &[&peer_line, "remove=true"]).unwrap();
        assert!(s.peers.is_empty() && s.allowed.is_empty() && s.by_index.is_empty());
    }

    #[test]
    fn a_peer_set_before_the_private_key_handshakes_with_that_key_once_it_is_set() {
        let base = Snapshot {
            socket: Some(Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())),
            ..Default::default()
        };
        let set = |s: &Snapshot, lines: &[&str]| SetRequest::parse(lines.iter().copied())?.apply(s);
        let their_secret = StaticSecret::from([2; 32]);
        let their_public = PublicKey::from(&their_secret).to_bytes();
        let peer_line = format!("public_key={}", hex(&their_public));
        // The peer first, as `wg set dev peer ...` may do ...
        let s = set(&base, &[&peer_line, "allowed_ip=100.96.0.2/32"]).unwrap();
        assert!(s.identity.is_none() && s.peers.contains_key(&their_public));
        assert!(render(&s).contains(&format!("{peer_line}\n")));
        // ... then the device's own key.
        let s = set(&s, &[&format!("private_key={K1}")]).unwrap();
        let mut init = vec![0u8; 256];
        let init = match s.peers[&their_public]
            .tunn()
            .format_handshake_initiation(&mut init, false)
        {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            _ => panic!("no handshake initiation"),
        };
        // The peer expects the device's key: it answers only an initiation
        // made with it.
        let our_public = PublicKey::from(&StaticSecret::from([1; 32]));
        let mut theirs = Tunn::new(their_secret, our_public, None, None, 7, None);
        let mut out = vec![0u8; 256];
        assert!(
            matches!(
                theirs.decapsulate(None, &init, &mut out),
                TunnResult::WriteToNetwork(_)
            ),
            "the initiation was not made with the device's key"
        );
    }
}
