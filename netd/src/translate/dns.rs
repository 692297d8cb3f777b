//! Snapshot -> `shoal-dns` record set: one view per network, each service
//! on it with its VIP (vip mode) and its tasks, healthy = serving (healthy
//! and weight above 0), so unhealthy and draining tasks never answer.
//! Tasks on nodes that are gone are left out even before their lease
//! expires everywhere.

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
        .map(|net| Network {
            name: net.name.clone(),
            also: Vec::new(),
            services: s
                .services
                .values()
                .filter(|v| v.networks.contains_key(&net.name))
                .map(|v| Service {
                    name: v.name.clone(),
                    vip: match v.endpoint_mode {
                        EndpointMode::Vip => {
                            v.networks.get(&net.name).copied().flatten().map(IpAddr::V4)
                        }
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
                        .replicas(&v.name, &net.name)
                        .filter(|e| s.nodes.contains_key(&e.node))
                        .map(|e| Task {
                            name: e.name.clone(),
                            ip: IpAddr::V4(e.ip),
                            healthy: e.serving(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    RecordSet {
        networks,
        ..RecordSet::default()
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
}
