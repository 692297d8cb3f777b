//! The node's WireGuard mesh, which carries encrypted networks: VXLAN whose
//! `local` is the node's tunnel address, so its packets leave only through
//! the WireGuard device.
//!
//! One device per node, in the node namespace, named by
//! [`Names::wireguard`](crate::names::Names::wireguard) (node-unique, since
//! a userspace device's UAPI socket `/var/run/wireguard/<dev>.sock` is
//! machine-wide). Kernel WireGuard where the module exists; otherwise
//! shoal's own userspace device ([`device`]: boringtun's protocol state
//! machine, batched UDP I/O) in this process ([`DeviceHost`]), configured
//! like any userspace WireGuard through its UAPI socket ([`uapi`]; the
//! kernel device through wireguard-control; [`uapi`] says why not both).
//!
//! A guard route (`blackhole <tunnel prefix>` at a marking metric, see
//! [`crate::kernel::guard`]) stays in the node namespace while the node needs
//! a mesh, even when the device is gone or down: without it, VXLAN packets
//! for a peer's tunnel address would follow a default route onto the
//! underlay in clear (the e2e suite shows they do).
//!
//! # Layout
//! - this file: the mesh's state, observed or desired, in one shape.
//! - [`probe`]: which backend the kernel allows.
//! - [`observe`]: reads the device and its configuration.
//! - [`step`]: the mesh's plan steps (device, peers, guard route) and their diff.
//! - [`control`]: reads and updates for either backend.
//! - [`uapi`]: the userspace API over a device's Unix socket (client).
//! - [`device`]: the userspace device: TUN, UDP GSO/GRO, UAPI server.
//! - [`host`]: [`DeviceHost`], userspace devices living in this process.
//! - [`exec`]: runs one step.

pub mod control;
pub mod device;
pub mod exec;
pub mod host;
pub mod observe;
pub mod probe;
pub mod step;
pub mod uapi;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddrV4;

use ipnet::Ipv4Net;

use crate::config::Config;
use crate::names::Names;

pub use host::DeviceHost;
pub use step::MeshStep;

/// Where the UAPI sockets of userspace devices live (as for `wg`).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// The UAPI socket of the userspace device `dev`.
pub fn uapi_socket(dev: &str) -> std::path::PathBuf {
    std::path::Path::new(UAPI_DIR).join(format!("{dev}.sock"))
}

/// Which implementation carries the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel module (`ip link add ... type wireguard`).
    Kernel,
    /// shoal's userspace device inside a `shoal-overlay run` process, on a
    /// TUN device.
    Userspace,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        })
    }
}

/// A private key: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One peer as the device holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its underlay address and port.
    pub endpoint: Option<SocketAddrV4>,
    /// Allowed IPs: its tunnel address /32.
    pub allowed_ips: BTreeSet<Ipv4Net>,
}

/// The device's WireGuard configuration. The identity is compared by
/// public key, so no secret is held in state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// The public key of the node's private key, if one is set.
    pub public_key: Option<[u8; 32]>,
    /// UDP listen port.
    pub listen_port: u16,
    /// Peers by base64 public key.
    pub peers: BTreeMap<String, Peer>,
}

/// The device as a link, plus its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// Its name in the node namespace.
    pub dev: String,
    /// Kernel or userspace.
    pub backend: Backend,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// IPv4 addresses: the node's tunnel address with the mesh prefix.
    pub addresses: BTreeSet<Ipv4Net>,
    /// `None` when the configuration could not be read (a userspace device
    /// whose process is gone or going): the plan rebuilds the device.
    pub config: Option<MeshConfig>,
    /// The private key to set: given when desired, never observed.
    pub private_key: Option<Secret>,
}

/// The mesh a config asks for, or `None` when no network is encrypted.
/// Keys were checked by validation.
pub fn desired(config: &Config, names: &Names, backend: Backend, mtu: u32) -> Option<Mesh> {
    let wg = config.wireguard.as_ref().filter(|_| config.needs_mesh())?;
    let private = wireguard_control::Key::from_base64(&wg.private_key).ok()?;
    let peers = wg
        .peers
        .iter()
        .map(|p| {
            let peer = Peer {
                endpoint: Some(p.endpoint),
                allowed_ips: [Ipv4Net::new(p.tunnel_ip, 32).expect("/32")].into(),
            };
            let key = wireguard_control::Key::from_base64(&p.public_key)
                .map(|k| k.to_base64())
                .unwrap_or_else(|_| p.public_key.clone());
            (key, peer)
        })
        .collect();
    Some(Mesh {
        dev: names.wireguard(),
        backend,
        mtu,
        up: true,
        addresses: [wg.tunnel_ip].into(),
        config: Some(MeshConfig {
            public_key: Some(private.get_public().0),
            listen_port: wg.listen_port,
            peers,
        }),
        private_key: Some(Secret(private.0)),
    })
}
