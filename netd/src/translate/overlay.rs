//! Snapshot -> `shoal-overlay` desired state for one node.
//!
//! Every network gets a sandbox on every node (VIPs and published ports
//! need it even where no replica runs). Local endpoints whose container
//! namespace this node knows are attached; every endpoint on another live
//! node, and every other node's lb address, becomes a static remote. Health
//! does not matter here: reachability is the datapath's job, traffic
//! selection is DNS's and the balancer's.

use shoal_overlay::config::{
    Config, Endpoint as OvEndpoint, Network as OvNetwork, Node as OvNode, Remote,
};

use super::Local;
use crate::model::{EndpointMode, Snapshot};

/// The overlay config of `local`'s node. Encrypted networks are left out
/// (with a warning) until the model carries the WireGuard mesh.
pub fn overlay_config(s: &Snapshot, local: &Local) -> Config {
    let mut networks = Vec::new();
    for net in s.networks.values() {
        if net.encrypted {
            tracing::warn!(network = %net.name, "encrypted networks are not driven by netd yet; skipped");
            continue;
        }
        let me = s.nodes.get(&local.node);
        let lb_address = me.and_then(|n| n.lb_addresses.get(&net.name).copied());
        let vips = s
            .services
            .values()
            .filter(|v| v.endpoint_mode == EndpointMode::Vip)
            .filter_map(|v| v.networks.get(&net.name).copied().flatten())
            .collect();
        let endpoints = s
            .endpoints
            .values()
            .filter(|e| e.network == net.name && e.node == local.node)
            .filter_map(|e| {
                let netns = local.containers.get(&(e.network.clone(), e.name.clone()))?;
                Some(OvEndpoint {
                    id: e.name.clone(),
                    netns: netns.clone(),
                    ip: e.ip,
                    mac: None,
                    ifname: None,
                })
            })
            .collect();
        let mut remotes: Vec<Remote> = s
            .endpoints
            .values()
            .filter(|e| e.network == net.name && e.node != local.node)
            .filter_map(|e| {
                let node = s.nodes.get(&e.node)?;
                Some(Remote {
                    ip: e.ip,
                    mac: None,
                    node_ip: node.advertise,
                })
            })
            .collect();
        remotes.extend(
            s.nodes
                .values()
                .filter(|n| n.name != local.node)
                .filter_map(|n| Some((n.lb_addresses.get(&net.name)?, n.advertise)))
                .map(|(ip, node_ip)| Remote {
                    ip: *ip,
                    mac: None,
                    node_ip,
                }),
        );
        networks.push(OvNetwork {
            name: net.name.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            vni: net.vni,
            encrypted: false,
            lb_address,
            vips,
            mtu: net.mtu,
            endpoints,
            remotes,
        });
    }
    Config {
        node: OvNode {
            name: local.node.clone(),
            netns: local.netns.clone(),
            underlay_ip: local.underlay,
        },
        wireguard: None,
        networks,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{local, snapshot};
    use super::*;

    #[test]
    fn local_endpoints_attach_remote_ones_become_static_entries() {
        let s = snapshot();
        let c = overlay_config(&s, &local("n1"));
        assert_eq!(c.node.name, "n1");
        let front = &c.networks[0];
        assert_eq!((front.name.as_str(), front.vni), ("front", 4096));
        assert_eq!(
            front.vips,
            ["10.77.0.200".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(front.lb_address, Some("10.77.0.251".parse().unwrap()));
        // Local endpoints with a known container attach (draining ones too:
        // their connections finish); web.4 is local but this process knows
        // no namespace for it: not attached.
        let attached: Vec<_> = front
            .endpoints
            .iter()
            .map(|e| (e.id.as_str(), e.netns.as_str()))
            .collect();
        assert_eq!(attached, [("api.2", "c-api2"), ("web.1", "c-web1")]);
        // api.1 and web.2 on n2, and n2's lb address, are remotes via n2.
        let remotes: Vec<_> = front
            .remotes
            .iter()
            .map(|r| (r.ip.to_string(), r.node_ip.to_string()))
            .collect();
        let n2 = "198.18.0.2".to_string();
        assert_eq!(
            remotes,
            [
                ("10.77.0.21".to_string(), n2.clone()),
                ("10.77.0.12".to_string(), n2.clone()),
                ("10.77.0.252".to_string(), n2)
            ]
        );
        // An endpoint on a node that is gone (lease expired) is no remote.
        assert!(!front
            .remotes
            .iter()
            .any(|r| r.ip.to_string() == "10.77.0.13"));
    }

    #[test]
    fn the_same_snapshot_gives_the_same_config() {
        let s = snapshot();
        assert_eq!(
            overlay_config(&s, &local("n1")),
            overlay_config(&s.clone(), &local("n1"))
        );
    }
}
