//! Reading and changing a device's WireGuard configuration, either backend:
//! a kernel device through wireguard-control (generic netlink, so the
//! caller must be on a thread inside the node namespace), a userspace one
//! through its UAPI socket ([`uapi`]; any thread, as the
//! socket path is machine-wide).

use std::net::{IpAddr, SocketAddr};

use ipnet::Ipv4Net;
use wireguard_control::{Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use super::{uapi, Backend, MeshConfig, MeshStep, Peer};
use crate::error::Error;

fn iface(dev: &str) -> Result<InterfaceName, Error> {
    dev.parse()
        .map_err(|e| Error::Conflict(format!("WireGuard device name `{dev}`: {e:?}")))
}

/// A base64 public key, or an error naming the device and the key.
pub fn public_key(dev: &str, b64: &str) -> Result<Key, Error> {
    Key::from_base64(b64)
        .map_err(|_| Error::Conflict(format!("wg set {dev}: `{b64}` is not a public key")))
}

/// The configuration of `dev`; equals `wg showconf DEV`.
pub fn read(dev: &str, backend: Backend) -> Result<MeshConfig, Error> {
    if backend == Backend::Userspace {
        return uapi::get(dev);
    }
    let d = Device::get(&iface(dev)?, wireguard_control::Backend::Kernel)
        .map_err(Error::io(format!("wg show {dev} (kernel)")))?;
    let peers = d
        .peers
        .iter()
        .map(|p| {
            let endpoint = match p.config.endpoint {
                Some(SocketAddr::V4(a)) => Some(a),
                _ => None,
            };
            let allowed_ips = p
                .config
                .allowed_ips
                .iter()
                .filter_map(|a| match a.address {
                    IpAddr::V4(v4) => Ipv4Net::new(v4, a.cidr).ok(),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let peer = Peer {
                endpoint,
                allowed_ips,
            };
            (p.config.public_key.to_base64(), peer)
        })
        .collect();
    Ok(MeshConfig {
        public_key: d.private_key.map(|k| k.get_public().0),
        listen_port: d.listen_port.unwrap_or(0),
        peers,
    })
}

/// Applies a configuration step (`SetInterface`, `SetPeer`, `RemovePeer`);
/// other steps are not configuration and are refused.
pub fn apply(step: &MeshStep) -> Result<(), Error> {
    let (dev, backend, update) = match step {
        MeshStep::SetInterface {
            dev,
            backend,
            private_key,
            listen_port,
        } => (
            dev,
            *backend,
            DeviceUpdate::new()
                .set_private_key(Key(private_key.0))
                .set_listen_port(*listen_port),
        ),
        MeshStep::SetPeer {
            dev,
            backend,
            public_key: key,
            endpoint,
            allowed_ips,
        } => {
            let mut peer = PeerConfigBuilder::new(&public_key(dev, key)?).replace_allowed_ips();
            if let Some(e) = endpoint {
                peer = peer.set_endpoint(SocketAddr::V4(*e));
            }
            for a in allowed_ips {
                peer = peer.add_allowed_ip(IpAddr::V4(a.addr()), a.prefix_len());
            }
            (dev, *backend, DeviceUpdate::new().add_peer(peer))
        }
        MeshStep::RemovePeer {
            dev,
            backend,
            public_key: key,
        } => (
            dev,
            *backend,
            DeviceUpdate::new().remove_peer_by_key(&public_key(dev, key)?),
        ),
        other => {
            return Err(Error::Conflict(format!(
                "`{other}` is not a WireGuard configuration change"
            )))
        }
    };
    if backend == Backend::Userspace {
        return uapi::set(step);
    }
    update
        .apply(&iface(dev)?, wireguard_control::Backend::Kernel)
        .map_err(Error::io(format!("{step}")))
}
