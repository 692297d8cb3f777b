//! Every name and mark shoal puts into the kernel for a node.
//!
//! Several nodes may share one machine (tests, demos), so everything a node
//! creates outside its own sandboxes carries a node-unique prefix, and every
//! link carries an alias starting `shoal:<node>:`: that alias, not the name,
//! is what tells shoal a link is its own, so `apply` and `down` never remove
//! anything they did not create.

/// The fixed name of the bridge inside a sandbox.
pub const BRIDGE: &str = "br0";
/// The name of the VXLAN device once inside a sandbox.
pub const VXLAN: &str = "vxlan0";

/// Names for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    node: String,
    short: String,
}

impl Names {
    /// Names for the node called `node` (already validated).
    pub fn new(node: &str) -> Names {
        Names {
            node: node.to_string(),
            short: format!("s{:04x}", fnv32(node.as_bytes()) & 0xffff),
        }
    }

    /// The sandbox namespace of `network`: `shoal.<node>.<network>`. Node and
    /// network names cannot hold `.`, so the split is unambiguous.
    pub fn sandbox(&self, network: &str) -> String {
        format!("{}{network}", self.sandbox_prefix())
    }

    /// What every sandbox name of this node starts with.
    pub fn sandbox_prefix(&self) -> String {
        format!("shoal.{}.", self.node)
    }

    /// The network a sandbox name belongs to, if it is one of this node's.
    pub fn network_of_sandbox<'a>(&self, netns: &'a str) -> Option<&'a str> {
        netns
            .strip_prefix(&self.sandbox_prefix())
            .filter(|n| !n.is_empty() && !n.contains('.'))
    }

    /// The VXLAN device's name in the node namespace, between its creation
    /// there and its move into the sandbox (e.g. `s1a2bx1000`).
    pub fn vxlan_staging(&self, vni: u32) -> String {
        format!("{}x{vni:x}", self.short)
    }

    /// The host (bridge) side of an endpoint's veth pair, e.g. `s1a2be0c1d2e3f`.
    pub fn veth_host(&self, endpoint: &str) -> String {
        format!("{}e{:08x}", self.short, fnv32(endpoint.as_bytes()))
    }

    /// The container side of the pair before it moves and is renamed.
    pub fn veth_staging(&self, endpoint: &str) -> String {
        format!("{}c{:08x}", self.short, fnv32(endpoint.as_bytes()))
    }

    /// The node's WireGuard device in its namespace, e.g. `s1a2bwg`. A
    /// userspace device's UAPI socket is named after it, and that path is
    /// machine-wide, so the name carries the node-unique prefix.
    pub fn wireguard(&self) -> String {
        format!("{}wg", self.short)
    }

    /// A throwaway link made and deleted at once to learn whether the kernel
    /// has WireGuard.
    pub fn wireguard_probe(&self) -> String {
        format!("{}wp", self.short)
    }

    /// The alias of the WireGuard device. Network names hold no `:`, so it
    /// never looks like a network's alias (`shoal:<node>:<net>:...`).
    pub fn alias_wireguard(&self) -> String {
        format!("{}wg", self.alias_prefix())
    }

    /// What every alias of this node's links starts with.
    pub fn alias_prefix(&self) -> String {
        format!("shoal:{}:", self.node)
    }

    /// The alias of a network's bridge or VXLAN device (`kind` = `bridge`, `vxlan`).
    pub fn alias(&self, network: &str, kind: &str) -> String {
        format!("{}{network}:{kind}", self.alias_prefix())
    }

    /// The alias of an endpoint's host-side veth: it records the endpoint and
    /// its container namespace, so a later run can find the container side.
    pub fn alias_endpoint(&self, network: &str, id: &str, netns: &str) -> String {
        format!("{}{network}:ep:{id}@{netns}", self.alias_prefix())
    }

    /// The alias of the container-side interface.
    pub fn alias_container(&self, network: &str, id: &str) -> String {
        format!("{}{network}:ep:{id}", self.alias_prefix())
    }

    /// Splits a host-side veth alias of `network` into (endpoint id, netns).
    pub fn parse_endpoint_alias<'a>(
        &self,
        network: &str,
        alias: &'a str,
    ) -> Option<(&'a str, &'a str)> {
        let rest = alias.strip_prefix(&self.alias_prefix())?;
        let rest = rest.strip_prefix(network)?.strip_prefix(":ep:")?;
        rest.split_once('@')
    }
}

/// FNV-1a, 32 bits: stable across Rust versions and machines, so names are too.
fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_ifnamsiz_and_differ_per_node() {
        let a = Names::new("n1");
        let b = Names::new("n2");
        for name in [
            a.vxlan_staging(0xff_ffff),
            a.veth_host("x".repeat(64).as_str()),
            a.veth_staging("web1"),
        ] {
            assert!(name.len() <= 15, "{name}");
        }
        assert!(a.wireguard().len() <= 15 && a.wireguard_probe().len() <= 15);
        assert_ne!(a.wireguard(), b.wireguard());
        assert_ne!(a.vxlan_staging(4096), b.vxlan_staging(4096));
        assert_ne!(a.veth_host("web1"), b.veth_host("web1"));
        assert_ne!(a.veth_host("web1"), a.veth_host("web2"));
        assert_eq!(a.veth_host("web1"), Names::new("n1").veth_host("web1"));
    }

    #[test]
    fn sandboxes_and_aliases_round_trip() {
        let n = Names::new("n1");
        assert_eq!(n.sandbox("front"), "shoal.n1.front");
        assert_eq!(n.network_of_sandbox("shoal.n1.front"), Some("front"));
        assert_eq!(n.network_of_sandbox("shoal.n1-x.front"), None);
        assert_eq!(
            Names::new("n1-x").network_of_sandbox("shoal.n1.front"),
            None
        );
        let alias = n.alias_endpoint("front", "web1", "/proc/1/ns/net");
        assert_eq!(
            n.parse_endpoint_alias("front", &alias),
            Some(("web1", "/proc/1/ns/net"))
        );
        assert_eq!(n.parse_endpoint_alias("back", &alias), None);
        assert_eq!(Names::new("n2").parse_endpoint_alias("front", &alias), None);
    }
}
