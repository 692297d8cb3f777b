//! Snapshot -> `shoal-dns` record set: one view per network, each service
//! on it with its VIP (vip mode) and its tasks, healthy = serving (healthy
//! and weight above 0), so unhealthy and draining tasks never answer.
//! Tasks on nodes that are gone are left out even before their lease
//! expires everywhere.

use std::collections::BTreeSet;
use std::net::IpAddr;

use shoal_dns::records::{
    EndpointMode as DnsMode, Network, Port, Protocol, RecordSet, Service, Task,
};

use crate::model::{EndpointMode, Snapshot};

/// The record set every node serves.
pub fn record_set(s: &Snapshot) -> RecordSet {
    let networks = s
        .networks
        .values()
        .map(|net| network(s, &net.name))
        .collect();
    RecordSet {
        networks,
        ..RecordSet::default()
    }
}

/// One network's view. Names are unique in a view (shoal-dns refuses a
/// view otherwise), so a task or container whose name is already taken by
/// a service, or a container named like a task, is left out with a
/// warning rather than breaking the view.
fn network(s: &Snapshot, net: &str) -> Network {
    let mut taken: BTreeSet<String> = s
        .services
        .values()
        .filter(|v| v.networks.contains_key(net))
        .map(|v| v.name.to_ascii_lowercase())
        .collect();
    let live = |e: &&crate::model::Endpoint| e.network == net && s.nodes.contains_key(&e.node);
    let mut services: Vec<Service> = s
        .services
        .values()
        .filter(|v| v.networks.contains_key(net))
        .map(|v| Service {
            name: v.name.clone(),
            vip: match v.endpoint_mode {
                EndpointMode::Vip => v.networks.get(net).copied().flatten().map(IpAddr::V4),
                EndpointMode::Dnsrr => None,
            },
            endpoint_mode: match v.endpoint_mode {
                EndpointMode::Vip => DnsMode::Vip,
                EndpointMode::Dnsrr => DnsMode::Dnsrr,
            },
            ports: v
                .ports
                .iter()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone()?,
                        port: p.target,
                        protocol: Protocol::Tcp,
                    })
                })
                .collect(),
            tasks: s
                .replicas(&v.name, net)
                .filter(live)
                .filter(|e| {
                    let free = taken.insert(e.name.to_ascii_lowercase());
                    if !free {
                        tracing::warn!(network = net, task = %e.name, "task name taken by a service; not in DNS");
                    }
                    free
                })
                .map(|e| Task {
                    name: e.name.clone(),
                    ip: IpAddr::V4(e.ip),
                    healthy: e.serving(),
                })
                .collect(),
        })
        .collect();
    // Containers outside any service answer by their own name (as on a
    // Docker user-defined network): a one-task dnsrr name whose task is
    // `<name>.0`.
    for e in s
        .endpoints
        .values()
        .filter(live)
        .filter(|e| e.service.is_none())
    {
        let name = e.name.to_ascii_lowercase();
        let task = format!("{name}.0");
        if taken.contains(&name) || taken.contains(&task) {
            tracing::warn!(network = net, container = %e.name, "container name taken; not in DNS");
            continue;
        }
        taken.insert(name);
        taken.insert(task.clone());
        services.push(Service {
            name: e.name.clone(),
            vip: None,
            endpoint_mode: DnsMode::Dnsrr,
            ports: Vec::new(),
            tasks: vec![Task {
                name: task,
                ip: IpAddr::V4(e.ip),
                healthy: e.serving(),
            }],
        });
    }
    Network {
        name: net.to_string(),
        also: Vec::new(),
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::snapshot;
    use super::*;

    #[test]
    fn services_tasks_and_health_become_records() {
        let r = record_set(&snapshot());
        assert_eq!(r.networks.len(), 1);
        let front = &r.networks[0];
        let names: Vec<_> = front.services.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        let (api, web) = (&front.services[0], &front.services[1]);
        assert_eq!(api.endpoint_mode, DnsMode::Dnsrr);
        assert_eq!(api.vip, None);
        assert_eq!(web.vip, Some("10.77.0.200".parse().unwrap()));
        assert_eq!(
            web.ports,
            [Port {
                name: "http".into(),
                port: 8000,
                protocol: Protocol::Tcp
            }]
        );
        let tasks: Vec<_> = web
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.healthy))
            .collect();
        // web.3's node is gone; web.4 is unhealthy.
        assert_eq!(tasks, [("web.1", true), ("web.2", true), ("web.4", false)]);
        // A draining task is not healthy: it leaves DNS first.
        let api_tasks: Vec<_> = api
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.healthy))
            .collect();
        assert_eq!(api_tasks, [("api.1", true), ("api.2", false)]);
    }

    #[test]
    fn containers_answer_by_name_and_collisions_never_break_a_view() {
        use crate::model::{Endpoint, EndpointState};
        let mut s = snapshot();
        let mut add = |name: &str, service: Option<&str>, ip: &str| {
            s.endpoints.insert(
                ("front".into(), name.into()),
                Endpoint {
                    name: name.into(),
                    network: "front".into(),
                    service: service.map(str::to_string),
                    node: "n1".into(),
                    ip: ip.parse().unwrap(),
                    weight: 1,
                    state: EndpointState::Healthy,
                },
            );
        };
        add("peer", None, "10.77.0.30");
        // Named like a service, and a replica named like a service.
        add("web", None, "10.77.0.31");
        add("api", Some("web"), "10.77.0.32");
        let r = record_set(&s);
        let front = &r.networks[0];
        let names: Vec<_> = front.services.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["api", "web", "peer"]);
        let peer = &front.services[2];
        assert_eq!(peer.endpoint_mode, DnsMode::Dnsrr);
        assert_eq!(peer.tasks[0].ip, "10.77.0.30".parse::<IpAddr>().unwrap());
        assert!(!front.services[1].tasks.iter().any(|t| t.name == "api"));
        // The view builds: no duplicate names.
        shoal_dns::Snapshot::build(&r, shoal_dns::Forwarding::default()).unwrap();
    }
}
