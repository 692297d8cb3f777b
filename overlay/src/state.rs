//! Kernel state of one node's overlay, as observed or as desired, in one
//! shape so that a plan is a plain diff of two values.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::kernel::vxlan::VxlanInfo;
use crate::mac::Mac;

/// Everything shoal owns for a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Sandboxes by network name.
    pub sandboxes: BTreeMap<String, Sandbox>,
    /// Links marked as shoal's that sit in the node namespace, where only a
    /// VXLAN device on its way to a sandbox should ever be (after a crash).
    pub strays: Vec<String>,
    /// The node's WireGuard device, when it has one.
    pub mesh: Option<crate::mesh::Mesh>,
    /// Guard routes (blackholes for the tunnel prefix) in the node
    /// namespace; they outlive the device on purpose.
    pub guards: std::collections::BTreeSet<ipnet::Ipv4Net>,
}

/// One network's sandbox namespace and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sandbox {
    /// br0.
    pub bridge: Option<Bridge>,
    /// Addresses on br0: gateway/prefix, lb address and VIPs /32.
    pub addresses: BTreeSet<Ipv4Net>,
    /// The VXLAN device.
    pub vxlan: Option<Vxlan>,
    /// Permanent neighbours on the VXLAN device: remote IP -> MAC.
    pub neighbours: BTreeMap<Ipv4Addr, Mac>,
    /// Permanent FDB entries on the VXLAN device: remote MAC -> node VTEP.
    pub fdb: BTreeMap<Mac, Ipv4Addr>,
    /// Attached containers by endpoint id.
    pub endpoints: BTreeMap<String, Attachment>,
}

/// br0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bridge {
    /// Its MAC; desired `None` = whatever the kernel chose.
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
}

/// The VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// VNI, local, port, learning, proxy.
    pub info: VxlanInfo,
    /// Its MTU.
    pub mtu: u32,
    /// Enslaved to br0 and up.
    pub attached: bool,
}

/// A container's attachment: both ends of its veth pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The container namespace (name or path, as in the file).
    pub netns: String,
    /// The container-side interface name.
    pub ifname: String,
    /// Its address with the subnet's prefix.
    pub ip: Ipv4Net,
    /// Its MAC.
    pub mac: Mac,
    /// MTU of both ends.
    pub mtu: u32,
    /// Default route via the gateway.
    pub gateway: Ipv4Addr,
    /// The host end is on br0 and both ends are up.
    pub wired: bool,
}

impl Bridge {
    /// True when `self` (observed) satisfies `want`.
    pub fn satisfies(&self, want: &Bridge) -> bool {
        self.mtu == want.mtu && (want.mac.is_none() || self.mac == want.mac)
    }
}
