//! Reads what shoal owns for a node from the kernel: the node namespace
//! (strays and the WireGuard device), each sandbox, and the container side
//! of each attachment.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_route::link::InfoKind;

use crate::error::Error;
use crate::kernel::{addr, fdb, link, neigh, route};
use crate::mac::Mac;
use crate::names::{Names, BRIDGE, VXLAN};
use crate::netns::{self, NsTarget, NsWorker};
use crate::state::{Attachment, Bridge, NodeState, Sandbox, Vxlan};

/// Reads the node's current state. `node_ns` is the namespace playing the host.
pub fn observe(names: &Names, node_ns: &NsTarget) -> Result<NodeState, Error> {
    let prefix = names.alias_prefix();
    let mesh_alias = names.alias_wireguard();
    let strays = netns::run_in(node_ns, move |h| async move {
        let links = link::list(&h).await?;
        Ok(links
            .into_iter()
            .filter(|l| {
                l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&prefix) && a != mesh_alias)
            })
            .map(|l| l.name)
            .collect::<Vec<_>>())
    })?;
    let mut sandboxes = BTreeMap::new();
    for ns in netns::list(&names.sandbox_prefix())? {
        let Some(network) = names.network_of_sandbox(&ns) else {
            continue;
        };
        let sandbox = observe_sandbox(names, network, &ns)?;
        sandboxes.insert(network.to_string(), sandbox);
    }
    let mesh = crate::mesh::observe::observe(names, node_ns)?;
    let guards = netns::run_in(node_ns, |h| async move {
        Ok(crate::kernel::guard::list(&h).await?.into_iter().collect())
    })?;
    Ok(NodeState {
        sandboxes,
        strays,
        mesh,
        guards,
    })
}

/// A host-side veth as found in a sandbox.
struct HostEnd {
    id: String,
    netns: String,
    peer: Option<u32>,
    mtu: u32,
    wired: bool,
}

fn observe_sandbox(names: &Names, network: &str, ns: &str) -> Result<Sandbox, Error> {
    let worker = NsWorker::spawn(&NsTarget::from_config(ns))?;
    let names2 = names.clone();
    let net = network.to_string();
    let (mut sandbox, hosts) = worker.call(move |h| async move {
        let links = link::list(&h).await?;
        let mut sb = Sandbox::default();
        let br = links.iter().find(|l| l.name == BRIDGE);
        if let Some(br) = br {
            sb.bridge = Some(Bridge {
                mac: br.mac,
                mtu: br.mtu,
            });
            sb.addresses = addr::list(&h, br.index)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        }
        let br_index = br.map(|b| b.index);
        if let Some(vx) = links.iter().find(|l| l.name == VXLAN) {
            if let Some(info) = vx.vxlan {
                sb.vxlan = Some(Vxlan {
                    info,
                    mtu: vx.mtu,
                    attached: vx.up && vx.controller.is_some() && vx.controller == br_index,
                });
            }
            sb.neighbours = neigh::list(&h, vx.index).await?;
            sb.fdb = fdb::list(&h, vx.index).await?;
        }
        let mut hosts = Vec::new();
        for l in &links {
            if l.kind != Some(InfoKind::Veth) {
                continue;
            }
            let Some((id, netns)) = l
                .alias
                .as_deref()
                .and_then(|a| names2.parse_endpoint_alias(&net, a))
            else {
                continue;
            };
            hosts.push(HostEnd {
                id: id.to_string(),
                netns: netns.to_string(),
                peer: l.peer,
                mtu: l.mtu,
                wired: l.up
                    && l.controller.is_some()
                    && l.controller == br_index
                    && l.name == names2.veth_host(id),
            });
        }
        Ok((sb, hosts))
    })?;
    for host in hosts {
        let att = observe_container(names, network, &host)?;
        sandbox.endpoints.insert(host.id, att);
    }
    Ok(sandbox)
}

/// The container side of one attachment. A side that cannot be read (its
/// namespace or peer gone) comes back unwired, so the plan re-attaches it.
fn observe_container(names: &Names, network: &str, host: &HostEnd) -> Result<Attachment, Error> {
    let broken = Attachment {
        netns: host.netns.clone(),
        ifname: String::new(),
        ip: Ipv4Net::default(),
        mac: Mac([0; 6]),
        mtu: host.mtu,
        gateway: Ipv4Addr::UNSPECIFIED,
        wired: false,
    };
    let (Some(peer), true) = (host.peer, netns::exists(&host.netns)) else {
        return Ok(broken);
    };
    let alias = names.alias_container(network, &host.id);
    let host_mtu = host.mtu;
    let host_wired = host.wired;
    let netns_name = host.netns.clone();
    let seen = netns::run_in(&NsTarget::from_config(&host.netns), move |h| async move {
        let Some(l) = link::by_index(&h, peer).await? else {
            return Ok(None);
        };
        if l.alias.as_deref() != Some(alias.as_str()) {
            return Ok(None);
        }
        let ip = addr::list(&h, l.index).await?.first().map(|(n, _)| *n);
        let gateway = route::default_gateway(&h, l.index).await?;
        Ok(Some(Attachment {
            netns: netns_name,
            ifname: l.name.clone(),
            ip: ip.unwrap_or_default(),
            mac: l.mac.unwrap_or(Mac([0; 6])),
            mtu: if l.mtu == host_mtu { l.mtu } else { 0 },
            gateway: gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
            wired: host_wired && l.up,
        }))
    })?;
    Ok(seen.unwrap_or(broken))
}

/// Checks that no interface named like a new attachment's already sits in
/// its container without being shoal's; run before anything changes.
pub fn check_free(names: &Names, network: &str, id: &str, att: &Attachment) -> Result<(), Error> {
    let alias = names.alias_container(network, id);
    let ifname = att.ifname.clone();
    let what = format!(
        "endpoint `{id}` of network `{network}`: netns `{}` already has an interface `{}` that shoal did not create",
        att.netns, att.ifname
    );
    let found = netns::run_in(&NsTarget::from_config(&att.netns), move |h| async move {
        Ok(link::by_name(&h, &ifname).await?.map(|l| l.alias))
    })?;
    match found {
        Some(a) if a.as_deref() != Some(alias.as_str()) => Err(Error::Conflict(what)),
        _ => Ok(()),
    }
}
