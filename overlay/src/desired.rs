//! The kernel state a [`Config`] asks for, including the MTU it derives
//! from the underlay.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::{Config, Network};
use crate::error::Error;
use crate::kernel::vxlan::VxlanInfo;
use crate::kernel::{addr, link, route};
use crate::netns::{self, NsTarget};
use crate::state::{Attachment, Bridge, Sandbox, Vxlan};

/// VXLAN's overhead over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// WireGuard's over IPv4: outer IP 20 + UDP 8 + header 16 + tag 16, plus
/// room for an IPv6 underlay (the figure `wg-quick` uses).
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// The underlay addresses an encrypted network's packets travel to: every
/// WireGuard peer's endpoint.
fn mesh_endpoints(config: &Config) -> Vec<Ipv4Addr> {
    config
        .wireguard
        .iter()
        .flat_map(|w| w.peers.iter().map(|p| *p.endpoint.ip()))
        .collect()
}

/// The WireGuard device's MTU, when the node needs one: the smallest
/// underlay MTU (the link holding `underlay_ip`, the route to each peer's
/// endpoint) minus [`WIREGUARD_OVERHEAD`].
pub fn mesh_mtu(config: &Config, node_ns: &NsTarget) -> Result<Option<u32>, Error> {
    if !config.needs_mesh() {
        return Ok(None);
    }
    let underlay_ip = config.node.underlay_ip;
    let peers = mesh_endpoints(config);
    netns::run_in(node_ns, move |h| async move {
        let under = underlay_mtu(&h, underlay_ip, &peers).await?;
        under
            .checked_sub(WIREGUARD_OVERHEAD)
            .filter(|m| *m >= 68 + VXLAN_OVERHEAD)
            .map(Some)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "[wireguard]: underlay MTU {under} leaves no room for the mesh"
                ))
            })
    })
}

/// min(MTU of the link holding `underlay_ip`, route MTU to each of `peers`
/// that has a route now).
async fn underlay_mtu(
    h: &rtnetlink::Handle,
    underlay_ip: Ipv4Addr,
    peers: &[Ipv4Addr],
) -> Result<u32, Error> {
    let what = format!("underlay_ip {underlay_ip}");
    let own = addr::owner(h, underlay_ip).await?.ok_or_else(|| {
        Error::Conflict(format!(
            "{what}: no link in the node namespace holds this address"
        ))
    })?;
    let mut under = link::by_index(h, own)
        .await?
        .ok_or_else(|| Error::Conflict(format!("{what}: its link vanished")))?
        .mtu;
    for p in peers {
        // A peer with no route right now (a partition, a blackhole) cannot
        // bound the MTU, and must not stop the whole apply: the other
        // peers' changes still have to land.
        match route::mtu_towards(h, *p).await {
            Ok(m) => under = under.min(m),
            Err(e) => {
                tracing::warn!(peer = %p, error = %e, "no route to a peer now; its path does not bound the MTU")
            }
        }
    }
    Ok(under)
}

/// The overlay MTU of each network: the explicit `mtu`, else the smallest
/// underlay MTU towards the network's remote nodes (for an encrypted
/// network: towards every WireGuard peer's endpoint) and of the link
/// holding `underlay_ip`, minus the encapsulation.
pub fn mtus(config: &Config, node_ns: &NsTarget) -> Result<BTreeMap<String, u32>, Error> {
    let underlay_ip = config.node.underlay_ip;
    let endpoints = mesh_endpoints(config);
    let nets: Vec<(String, Option<u32>, bool, Vec<Ipv4Addr>)> = config
        .networks
        .iter()
        .map(|n| {
            let mut peers: Vec<Ipv4Addr> = if n.encrypted {
                endpoints.clone()
            } else {
                n.remotes.iter().map(|r| r.node_ip).collect()
            };
            peers.sort();
            peers.dedup();
            (n.name.clone(), n.mtu, n.encrypted, peers)
        })
        .collect();
    netns::run_in(node_ns, move |h| async move {
        let mut out = BTreeMap::new();
        for (name, explicit, encrypted, peers) in nets {
            let mtu = match explicit {
                Some(m) => m,
                None => {
                    let under = underlay_mtu(&h, underlay_ip, &peers).await?;
                    let overhead = VXLAN_OVERHEAD + if encrypted { WIREGUARD_OVERHEAD } else { 0 };
                    under.checked_sub(overhead).filter(|m| *m >= 68).ok_or_else(|| {
                        Error::Conflict(format!("network `{name}`: underlay MTU {under} leaves no room for the overlay"))
                    })?
                }
            };
            out.insert(name, mtu);
        }
        Ok(out)
    })
}

/// The sandbox a network should have on this node, given its MTU.
pub fn sandbox(config: &Config, net: &Network, mtu: u32) -> Sandbox {
    let prefix = net.subnet.prefix_len();
    let mut addresses = std::collections::BTreeSet::new();
    addresses.insert(Ipv4Net::new(net.gateway, prefix).expect("validated prefix"));
    for ip in net.lb_address.iter().chain(net.vips.iter()) {
        addresses.insert(Ipv4Net::new(*ip, 32).expect("/32"));
    }
    Sandbox {
        bridge: Some(Bridge {
            mac: net.bridge_mac(),
            mtu,
        }),
        addresses,
        vxlan: Some(Vxlan {
            info: VxlanInfo::wanted(net.vni, vtep(config, net)),
            mtu,
            attached: true,
        }),
        neighbours: net.remotes.iter().map(|r| (r.ip, r.mac())).collect(),
        fdb: net.remotes.iter().map(|r| (r.mac(), r.node_ip)).collect(),
        endpoints: net
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    Attachment {
                        netns: e.netns.clone(),
                        ifname: e.ifname().to_string(),
                        ip: Ipv4Net::new(e.ip, prefix).expect("validated prefix"),
                        mac: e.mac(),
                        mtu,
                        gateway: net.gateway,
                        wired: true,
                    },
                )
            })
            .collect(),
    }
}

/// The VXLAN `local` of `net`: the node's tunnel address when encrypted
/// (so packets go out only through the WireGuard device), else its
/// underlay address.
pub fn vtep(config: &Config, net: &Network) -> Ipv4Addr {
    match (&config.wireguard, net.encrypted) {
        (Some(wg), true) => wg.tunnel_ip.addr(),
        _ => config.node.underlay_ip,
    }
}

/// Every network's desired sandbox, by network name.
pub fn desired(config: &Config, mtus: &BTreeMap<String, u32>) -> BTreeMap<String, Sandbox> {
    config
        .networks
        .iter()
        .map(|n| (n.name.clone(), sandbox(config, n, mtus[&n.name])))
        .collect()
}
