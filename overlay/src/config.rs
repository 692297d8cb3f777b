//! The desired-state file (TOML): what one node's overlay should look like.
//!
//! Every key, with its default. Unknown keys are rejected, so a typo never
//! silently means "use the default".
//!
//! ```toml
//! [node]
//! name = "n1"                  # required; [A-Za-z0-9_-], at most 32 chars. Names
//!                              # every sandbox and link shoal makes for this node,
//!                              # so it must be unique per machine.
//! netns = "n1"                 # namespace that plays this host (a name under
//!                              # /run/netns or an absolute path); absent = the
//!                              # namespace shoal-overlay runs in
//! underlay_ip = "198.18.0.1"   # required; this node's VTEP address (VXLAN `local`)
//!
//! [wireguard]                  # the node's mesh; needed when a network is encrypted,
//!                              # built only while one is (checked only then, too)
//! private_key = "<base64>"     # the node's WireGuard private key (`wg genkey`)
//! listen_port = 51820          # UDP port of the tunnel, in the node namespace
//! tunnel_ip = "100.96.0.1/24"  # the node's address inside the mesh; the prefix
//!                              # (at most /30) must hold every peer's tunnel_ip
//! backend = "auto"             # default "auto": kernel WireGuard when the module
//!                              # exists, else the in-process userspace device
//!                              # (hosted by `shoal-overlay run`);
//!                              # "kernel" or "userspace" force one
//! [[wireguard.peer]]           # one per other node
//! public_key = "<base64>"
//! endpoint = "198.18.0.2:51820"   # its underlay address and port
//! tunnel_ip = "100.96.0.2"        # its mesh address; the node_ip of its remotes
//!
//! [[network]]                  # one sandbox namespace per network on this node
//! name = "front"               # required; [A-Za-z0-9_-], at most 32 chars
//! subnet = "10.77.0.0/24"      # required; must not overlap another network
//! gateway = "10.77.0.1"        # required; on br0 of every node, inside the subnet
//! vni = 4096                   # required; 1..=16777215, unique among networks
//! encrypted = false            # default false; true = VXLAN over the WireGuard mesh
//! lb_address = "10.77.0.251"   # optional; this node's own address in the network
//!                              # (on br0 as /32; br0's MAC is derived from it)
//! vips = ["10.77.0.200"]       # default []; service VIPs, /32 on br0 on every node
//! mtu = 1400                   # optional; overrides the MTU derived from the underlay
//!
//! [[network.endpoint]]         # a container on this node
//! id = "web1"                  # required; unique in the network, [A-Za-z0-9_.-]
//! netns = "c1"                 # required; the container's namespace (name or path)
//! ip = "10.77.0.11"            # required; inside the subnet
//! mac = "02:42:0a:4d:00:0b"    # optional; default 02:42 + the IPv4 bytes
//! ifname = "eth0"              # default "eth0"; the interface name in the container
//!
//! [[network.remote]]           # an endpoint on another node
//! ip = "10.77.0.12"            # required; inside the subnet
//! mac = "02:42:0a:4d:00:0c"    # optional; default 02:42 + the IPv4 bytes
//! node_ip = "198.18.0.2"       # required; its node's underlay address, or, in an
//!                              # encrypted network, its node's mesh tunnel_ip
//! ```
//!
//! An encrypted network's VXLAN device uses this node's `tunnel_ip` as
//! `local`, so its packets travel only inside the WireGuard device; a remote
//! whose `node_ip` is no peer's `tunnel_ip` is refused rather than sent in
//! clear.
//!
//! Another node's lb address is listed as a remote like any endpoint: its MAC
//! is derived from the address, as br0's is.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::mac::Mac;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The host this file describes.
    pub node: Node,
    /// The WireGuard mesh, for encrypted networks.
    #[serde(default)]
    pub wireguard: Option<WireGuard>,
    /// The overlay networks this node takes part in.
    #[serde(default, rename = "network")]
    pub networks: Vec<Network>,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique per machine; prefixes every name shoal creates for the node.
    pub name: String,
    /// The namespace playing this host; `None` = the caller's.
    #[serde(default)]
    pub netns: Option<String>,
    /// The VTEP address (VXLAN `local`).
    pub underlay_ip: Ipv4Addr,
}

/// `[wireguard]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGuard {
    /// Base64 private key.
    pub private_key: String,
    /// UDP listen port.
    pub listen_port: u16,
    /// This node's mesh address with prefix.
    pub tunnel_ip: Ipv4Net,
    /// Which device to build; default [`WireGuardBackend::Auto`].
    #[serde(default)]
    pub backend: WireGuardBackend,
    /// The other nodes.
    #[serde(default, rename = "peer")]
    pub peers: Vec<WireGuardPeer>,
}

/// `[wireguard] backend`: which WireGuard implementation carries the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireGuardBackend {
    /// The kernel module when it exists, else the userspace device.
    #[default]
    Auto,
    /// The kernel module; an error when it is missing.
    Kernel,
    /// The userspace device inside the `shoal-overlay run` process, even when the
    /// module exists.
    Userspace,
}

/// `[[wireguard.peer]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGuardPeer {
    /// Base64 public key.
    pub public_key: String,
    /// Underlay address and port.
    pub endpoint: SocketAddrV4,
    /// Mesh address.
    pub tunnel_ip: Ipv4Addr,
}

/// `[[network]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Network name; part of the sandbox namespace's name.
    pub name: String,
    /// The network's address range.
    pub subnet: Ipv4Net,
    /// br0's address, the containers' default gateway.
    pub gateway: Ipv4Addr,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN over the WireGuard mesh.
    #[serde(default)]
    pub encrypted: bool,
    /// This node's own address in the network.
    #[serde(default)]
    pub lb_address: Option<Ipv4Addr>,
    /// Service VIPs, /32 on br0.
    #[serde(default)]
    pub vips: Vec<Ipv4Addr>,
    /// Explicit MTU; default: from the underlay route.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Containers on this node.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<Endpoint>,
    /// Endpoints on other nodes.
    #[serde(default, rename = "remote")]
    pub remotes: Vec<Remote>,
}

/// `[[network.endpoint]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Unique in the network.
    pub id: String,
    /// The container's namespace: a name under /run/netns or a path.
    pub netns: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Explicit MAC; default derived from `ip`.
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Interface name in the container; default `eth0`.
    #[serde(default)]
    pub ifname: Option<String>,
}

/// `[[network.remote]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// Explicit MAC; default derived from `ip`.
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Its node's VTEP address.
    pub node_ip: Ipv4Addr,
}

impl Endpoint {
    /// The MAC given, or the one derived from the IP.
    pub fn mac(&self) -> Mac {
        self.mac.unwrap_or_else(|| Mac::from_ipv4(self.ip))
    }

    /// The interface name in the container.
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or("eth0")
    }
}

impl Remote {
    /// The MAC given, or the one derived from the IP.
    pub fn mac(&self) -> Mac {
        self.mac.unwrap_or_else(|| Mac::from_ipv4(self.ip))
    }
}

impl Network {
    /// br0's MAC: derived from the lb address, which is unique per node.
    pub fn bridge_mac(&self) -> Option<Mac> {
        self.lb_address.map(Mac::from_ipv4)
    }
}

impl Config {
    /// True when some network is encrypted, i.e. the node needs its mesh.
    pub fn needs_mesh(&self) -> bool {
        self.networks.iter().any(|n| n.encrypted)
    }

    /// Parses TOML text. Only syntax and types are checked here; see
    /// [`crate::validate`] for the rules between items.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: e.message().to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Config::parse(&text)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example from the issue, exactly as written there.
    pub(crate) const ISSUE_EXAMPLE: &str = r#"
[node]
name = "n1"
netns = "n1"                 # namespace that plays this host; absent = the current one
underlay_ip = "198.18.0.1"   # this node's VTEP address

[wireguard]                  # needed when a network is encrypted
private_key = "<base64>"
listen_port = 51820
tunnel_ip = "100.96.0.1/24"
[[wireguard.peer]]
public_key = "<base64>"
endpoint = "198.18.0.2:51820"
tunnel_ip = "100.96.0.2"

[[network]]
name = "front"
subnet = "10.77.0.0/24"
gateway = "10.77.0.1"
vni = 4096
encrypted = false
lb_address = "10.77.0.251"
vips = ["10.77.0.200"]

[[network.endpoint]]         # a container on this node
id = "web1"
netns = "c1"
ip = "10.77.0.11"

[[network.remote]]           # an endpoint on another node
ip = "10.77.0.12"
mac = "02:42:0a:4d:00:0c"
node_ip = "198.18.0.2"       # its node's underlay (or tunnel) address
"#;

    #[test]
    fn accepts_the_issue_example_as_written() {
        let c = Config::parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(c.node.name, "n1");
        assert_eq!(c.node.netns.as_deref(), Some("n1"));
        let wg = c.wireguard.as_ref().unwrap();
        assert_eq!(wg.peers.len(), 1);
        assert_eq!(wg.peers[0].endpoint.port(), 51820);
        let net = &c.networks[0];
        assert_eq!((net.name.as_str(), net.vni), ("front", 4096));
        assert_eq!(net.vips, vec![Ipv4Addr::new(10, 77, 0, 200)]);
        assert_eq!(net.endpoints[0].mac().to_string(), "02:42:0a:4d:00:0b");
        assert_eq!(net.endpoints[0].ifname(), "eth0");
        assert_eq!(net.remotes[0].mac().to_string(), "02:42:0a:4d:00:0c");
        assert_eq!(net.bridge_mac().unwrap().to_string(), "02:42:0a:4d:00:fb");
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let text = ISSUE_EXAMPLE.replace("vni = 4096", "vni = 4096\nvnid = 1");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("unknown field `vnid`"), "{e}");
        assert!(e.contains("line 21"), "{e}");
        let text = ISSUE_EXAMPLE.replace("ip = \"10.77.0.11\"", "ip = \"10.77.0.11\"\nnet = 1");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("unknown field `net`"), "{e}");
    }

    #[test]
    fn rejects_bad_values() {
        let text = ISSUE_EXAMPLE.replace("\"02:42:0a:4d:00:0c\"", "\"02:42\"");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("not a MAC address"), "{e}");
        let e = Config::parse("[node]\nname = \"n\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `underlay_ip`"), "{e}");
    }
}
