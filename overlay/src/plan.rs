//! A plan: the steps that turn the observed state into the desired one,
//! computed as a pure diff so it can be printed (`diff`) and tested without
//! a kernel.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::kernel::vxlan::VxlanInfo;
use crate::mac::Mac;
use crate::mesh::{self, Mesh, MeshStep};
use crate::state::{Attachment, NodeState, Sandbox};

/// One change, in the order it is executed. Each prints as the `ip` or
/// `bridge` command it equals, prefixed with its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete a shoal-marked link left in the node namespace.
    RemoveStray {
        /// Its name.
        link: String,
    },
    /// Create the sandbox namespace (and bring its `lo` up).
    CreateSandbox,
    /// Delete the sandbox namespace with everything left in it.
    DeleteSandbox,
    /// Create br0.
    CreateBridge {
        /// Its MAC, if chosen.
        mac: Option<Mac>,
        /// Its MTU.
        mtu: u32,
    },
    /// Set br0's MAC and MTU.
    SetBridge {
        /// Its MAC, if chosen.
        mac: Option<Mac>,
        /// Its MTU.
        mtu: u32,
    },
    /// Add an address to br0.
    AddAddress(Ipv4Net),
    /// Remove an address from br0.
    DelAddress(Ipv4Net),
    /// Create the VXLAN device in the node namespace and move it in.
    CreateVxlan {
        /// Parameters.
        info: VxlanInfo,
        /// MTU.
        mtu: u32,
    },
    /// Delete the VXLAN device (with its neighbours and FDB).
    DeleteVxlan,
    /// Set the VXLAN device's MTU.
    SetVxlanMtu(u32),
    /// Add or change a permanent neighbour on the VXLAN device.
    SetNeighbour {
        /// Remote IP.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: Mac,
    },
    /// Remove a neighbour.
    DelNeighbour {
        /// Remote IP.
        ip: Ipv4Addr,
    },
    /// Add or change a permanent FDB entry on the VXLAN device.
    SetFdb {
        /// Remote MAC.
        mac: Mac,
        /// Its node's VTEP.
        dst: Ipv4Addr,
    },
    /// Remove an FDB entry.
    DelFdb {
        /// Remote MAC.
        mac: Mac,
        /// The VTEP it pointed to.
        dst: Ipv4Addr,
    },
    /// Remove a container's veth pair.
    Detach {
        /// Endpoint id.
        id: String,
    },
    /// Create a container's veth pair and configure its side.
    Attach {
        /// Endpoint id.
        id: String,
        /// What to build.
        attachment: Attachment,
    },
    /// A change to the node's WireGuard device.
    Mesh(MeshStep),
}

/// A step and the network it belongs to (`None` for the node namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The network, or `None` for node-level steps.
    pub network: Option<String>,
    /// The change.
    pub step: Step,
}

/// The ordered steps for one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// In execution order.
    pub items: Vec<Item>,
    /// What the plan was made with and is worth reporting though it changes
    /// nothing (e.g. which WireGuard backend the node uses); one line each.
    pub notes: Vec<String>,
}

impl Plan {
    /// True when the kernel already matches.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when running it needs a [`mesh::DeviceHost`] (a userspace
    /// WireGuard device must be created).
    pub fn needs_host(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(&i.step, Step::Mesh(m) if m.needs_host()))
    }

    fn push(&mut self, network: &str, step: Step) {
        self.items.push(Item {
            network: Some(network.to_string()),
            step,
        });
    }
}

/// The steps from `current` to `desired` (sandboxes by network name), for
/// a node that should have no WireGuard device.
pub fn diff(current: &NodeState, desired: &BTreeMap<String, Sandbox>) -> Plan {
    diff_node(current, None, desired)
}

/// The steps from `current` to the desired WireGuard device `mesh` and
/// sandboxes. The device is created or changed before any sandbox (the
/// VXLAN devices of encrypted networks send through it) and deleted after
/// the sandboxes that go.
pub fn diff_node(
    current: &NodeState,
    mesh: Option<&Mesh>,
    desired: &BTreeMap<String, Sandbox>,
) -> Plan {
    let mut plan = Plan::default();
    for link in &current.strays {
        plan.items.push(Item {
            network: None,
            step: Step::RemoveStray { link: link.clone() },
        });
    }
    for (net, sb) in &current.sandboxes {
        if !desired.contains_key(net) {
            teardown(&mut plan, net, sb);
        }
    }
    let (add_guards, del_guards) = mesh::step::diff_guards(&current.guards, mesh);
    let steps = add_guards
        .into_iter()
        .chain(mesh::step::diff(current.mesh.as_ref(), mesh))
        .chain(del_guards);
    for step in steps {
        plan.items.push(Item {
            network: None,
            step: Step::Mesh(step),
        });
    }
    let empty = Sandbox::default();
    for (net, want) in desired {
        let have = current.sandboxes.get(net);
        if have.is_none() {
            plan.push(net, Step::CreateSandbox);
        }
        diff_sandbox(&mut plan, net, have.unwrap_or(&empty), want);
    }
    plan
}

/// The steps that remove everything of `current`.
pub fn down(current: &NodeState) -> Plan {
    diff(current, &BTreeMap::new())
}

/// Detach first (synchronously, so containers lose their interface now, not
/// when the namespace is reaped), then the VXLAN device (frees its socket),
/// then the namespace.
fn teardown(plan: &mut Plan, net: &str, sb: &Sandbox) {
    for id in sb.endpoints.keys() {
        plan.push(net, Step::Detach { id: id.clone() });
    }
    if sb.vxlan.is_some() {
        plan.push(net, Step::DeleteVxlan);
    }
    plan.push(net, Step::DeleteSandbox);
}

fn diff_sandbox(plan: &mut Plan, net: &str, have: &Sandbox, want: &Sandbox) {
    for (id, att) in &have.endpoints {
        if want.endpoints.get(id) != Some(att) {
            plan.push(net, Step::Detach { id: id.clone() });
        }
    }
    if let Some(bw) = want.bridge {
        match have.bridge {
            None => plan.push(
                net,
                Step::CreateBridge {
                    mac: bw.mac,
                    mtu: bw.mtu,
                },
            ),
            Some(bh) if !bh.satisfies(&bw) => plan.push(
                net,
                Step::SetBridge {
                    mac: bw.mac,
                    mtu: bw.mtu,
                },
            ),
            Some(_) => {}
        }
    }
    for a in have.addresses.difference(&want.addresses) {
        plan.push(net, Step::DelAddress(*a));
    }
    for a in want.addresses.difference(&have.addresses) {
        plan.push(net, Step::AddAddress(*a));
    }
    let mut have_neigh = &have.neighbours;
    let mut have_fdb = &have.fdb;
    let empty_neigh = BTreeMap::new();
    let empty_fdb = BTreeMap::new();
    if let Some(vw) = want.vxlan {
        match have.vxlan {
            Some(vh) if vh.info == vw.info && vh.attached => {
                if vh.mtu != vw.mtu {
                    plan.push(net, Step::SetVxlanMtu(vw.mtu));
                }
            }
            other => {
                if other.is_some() {
                    plan.push(net, Step::DeleteVxlan);
                }
                plan.push(
                    net,
                    Step::CreateVxlan {
                        info: vw.info,
                        mtu: vw.mtu,
                    },
                );
                have_neigh = &empty_neigh;
                have_fdb = &empty_fdb;
            }
        }
    }
    for ip in have_neigh
        .keys()
        .filter(|ip| !want.neighbours.contains_key(ip))
    {
        plan.push(net, Step::DelNeighbour { ip: *ip });
    }
    for (ip, mac) in &want.neighbours {
        if have_neigh.get(ip) != Some(mac) {
            plan.push(net, Step::SetNeighbour { ip: *ip, mac: *mac });
        }
    }
    for (mac, dst) in have_fdb.iter().filter(|(m, _)| !want.fdb.contains_key(m)) {
        plan.push(
            net,
            Step::DelFdb {
                mac: *mac,
                dst: *dst,
            },
        );
    }
    for (mac, dst) in &want.fdb {
        if have_fdb.get(mac) != Some(dst) {
            plan.push(
                net,
                Step::SetFdb {
                    mac: *mac,
                    dst: *dst,
                },
            );
        }
    }
    for (id, att) in &want.endpoints {
        if have.endpoints.get(id) != Some(att) {
            plan.push(
                net,
                Step::Attach {
                    id: id.clone(),
                    attachment: att.clone(),
                },
            );
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = self.network.as_deref().unwrap_or("node");
        write!(f, "{net}: ")?;
        let mac_opt = |m: &Option<Mac>| m.map(|m| format!(" address {m}")).unwrap_or_default();
        match &self.step {
            Step::RemoveStray { link } => write!(f, "ip link del {link}  # stray, marked as shoal's"),
            Step::CreateSandbox => write!(f, "ip netns add <sandbox>; ip link set lo up"),
            Step::DeleteSandbox => write!(f, "ip netns delete <sandbox>"),
            Step::CreateBridge { mac, mtu } => {
                write!(f, "ip link add br0 type bridge mtu {mtu}{}; ip link set br0 up", mac_opt(mac))
            }
            Step::SetBridge { mac, mtu } => write!(f, "ip link set br0 mtu {mtu}{}", mac_opt(mac)),
            Step::AddAddress(a) => write!(f, "ip addr add {a} dev br0"),
            Step::DelAddress(a) => write!(f, "ip addr del {a} dev br0"),
            Step::CreateVxlan { info, mtu } => write!(
                f,
                "ip link add vxlan0 type vxlan id {} local {} dstport {} nolearning proxy mtu {mtu} (in the node netns, then moved); ip link set vxlan0 master br0 up",
                info.vni,
                info.local.map(|l| l.to_string()).unwrap_or_else(|| "any".into()),
                info.port
            ),
            Step::DeleteVxlan => write!(f, "ip link del vxlan0"),
            Step::SetVxlanMtu(m) => write!(f, "ip link set vxlan0 mtu {m}"),
            Step::SetNeighbour { ip, mac } => write!(f, "ip neigh replace {ip} lladdr {mac} dev vxlan0 nud permanent"),
            Step::DelNeighbour { ip } => write!(f, "ip neigh del {ip} dev vxlan0"),
            Step::SetFdb { mac, dst } => write!(f, "bridge fdb replace {mac} dev vxlan0 dst {dst} self permanent"),
            Step::DelFdb { mac, dst } => write!(f, "bridge fdb del {mac} dev vxlan0 dst {dst} self"),
            Step::Detach { id } => write!(f, "detach endpoint `{id}` (ip link del <its veth>)"),
            Step::Attach { id, attachment: a } => write!(
                f,
                "attach endpoint `{id}`: veth to br0, {} in netns {} with {} address {} mtu {}, default via {}",
                a.ifname, a.netns, a.ip, a.mac, a.mtu, a.gateway
            ),
            Step::Mesh(m) => write!(f, "{m}"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(f, "{item}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
