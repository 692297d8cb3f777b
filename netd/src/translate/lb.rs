//! Snapshot -> `shoal-lb` listeners for one node.
//!
//! - A VIP listener per (vip-mode service, network, port): `VIP:target`
//!   inside that network's sandbox.
//! - A published-port listener per (service, published port): on the
//!   node's underlay address, balancing to the replicas of the service's
//!   first network (by name), reached through that network's sandbox.
//!
//! Backends are the replicas on live nodes: healthy ones with their
//! weight, draining ones with weight 0 (open connections finish, no new
//! ones), starting and unhealthy ones not at all. Active checks run on the
//! replicas' own nodes and arrive through the store, so pools run none;
//! passive ejection stays on as each node's own quick view.

use std::net::{SocketAddr, SocketAddrV4};

use shoal_lb::config::{ListenerConfig, Mode};
use shoal_lb::http::HttpSettings;
use shoal_lb::proxy::ProxySettings;
use shoal_lb::{Backend, PoolConfig};

use super::Local;
use crate::model::{
    ClientAddress, EndpointMode, EndpointState, Policy, PortMode, Probe, Service, Snapshot,
};

/// Where a listener's sockets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Inside this network's sandbox namespace.
    Sandbox(String),
    /// In the node's own namespace, reaching backends through the sandbox
    /// of this network.
    Host {
        /// The network whose sandbox connects to the replicas.
        via: String,
    },
}

/// One listener and where it lives.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedListener {
    /// Where its sockets are made.
    pub place: Place,
    /// Its shoal-lb config (the name is stable across snapshots).
    pub config: ListenerConfig,
}

fn backends(s: &Snapshot, svc: &Service, network: &str, target: u16) -> Vec<Backend> {
    s.replicas(&svc.name, network)
        .filter(|e| s.nodes.contains_key(&e.node))
        .filter_map(|e| {
            let weight = match e.state {
                EndpointState::Healthy => e.weight,
                EndpointState::Draining => 0,
                EndpointState::Starting | EndpointState::Unhealthy => return None,
            };
            Some(Backend::new(SocketAddr::V4(SocketAddrV4::new(e.ip, target))).with_weight(weight))
        })
        .collect()
}

fn listener(
    name: String,
    listen: SocketAddr,
    svc: &Service,
    mode: PortMode,
    backends: Vec<Backend>,
) -> ListenerConfig {
    let mode = match mode {
        PortMode::Tcp => Mode::Tcp,
        PortMode::Http => Mode::Http,
    };
    ListenerConfig {
        name,
        listen,
        pool: PoolConfig::new(backends, policy(svc.policy)),
        proxy: ProxySettings {
            send_proxy_v2: svc.client_address == ClientAddress::ProxyV2,
            ..ProxySettings::default()
        },
        mode,
        http: HttpSettings {
            forwarded_headers: svc.client_address == ClientAddress::Forwarded,
            ..HttpSettings::default()
        },
    }
}

/// Every listener `local`'s node runs.
pub fn listeners(s: &Snapshot, local: &Local) -> Vec<PlacedListener> {
    let mut out = Vec::new();
    for svc in s.services.values() {
        if svc.endpoint_mode == EndpointMode::Vip {
            for (net, vip) in &svc.networks {
                let Some(vip) = vip else { continue };
                if !s.networks.contains_key(net) {
                    continue;
                }
                for p in &svc.ports {
                    out.push(PlacedListener {
                        place: Place::Sandbox(net.clone()),
                        config: listener(
                            format!("vip/{}/{net}/{}", svc.name, p.target),
                            SocketAddr::V4(SocketAddrV4::new(*vip, p.target)),
                            svc,
                            p.mode,
                            backends(s, svc, net, p.target),
                        ),
                    });
                }
            }
        }
        let Some(via) = svc.networks.keys().find(|n| s.networks.contains_key(*n)) else {
            continue;
        };
        for p in &svc.ports {
            let Some(published) = p.published else {
                continue;
            };
            out.push(PlacedListener {
                place: Place::Host { via: via.clone() },
                config: listener(
                    format!("publish/{}/{published}", svc.name),
                    SocketAddr::V4(SocketAddrV4::new(local.underlay, published)),
                    svc,
                    p.mode,
                    backends(s, svc, via, p.target),
                ),
            });
        }
    }
    out
}

/// The lb policy of a stored one.
pub fn policy(p: Policy) -> shoal_lb::PolicyKind {
    use shoal_lb::PolicyKind as K;
    match p {
        Policy::RoundRobin => K::RoundRobin,
        Policy::Weighted => K::Weighted,
        Policy::LeastConn => K::LeastConn,
        Policy::Random => K::Random,
        Policy::P2c => K::P2c,
        Policy::PeakEwma => K::PeakEwma,
        Policy::Maglev => K::Maglev,
        Policy::RingHash => K::RingHash,
    }
}

/// The lb health check of a stored probe.
pub fn check(p: &Probe) -> shoal_lb::health::Check {
    use shoal_lb::health::Check;
    match p {
        Probe::None => Check::None,
        Probe::Tcp => Check::Tcp,
        Probe::Http { path } => Check::Http { path: path.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{local, snapshot};
    use super::*;
    use shoal_lb::PolicyKind;

    #[test]
    fn vips_and_published_ports_balance_over_serving_replicas() {
        let ls = listeners(&snapshot(), &local("n1"));
        let names: Vec<_> = ls.iter().map(|l| l.config.name.as_str()).collect();
        assert_eq!(names, ["vip/web/front/8000", "publish/web/8080"]);
        let vip = &ls[0];
        assert_eq!(vip.place, Place::Sandbox("front".into()));
        assert_eq!(vip.config.listen.to_string(), "10.77.0.200:8000");
        assert_eq!(vip.config.pool.policy, PolicyKind::LeastConn);
        // Every stored policy maps to the lb policy of the same name.
        for p in Policy::ALL {
            assert_eq!(super::policy(p).name(), p.name());
        }
        let b: Vec<_> = vip
            .config
            .pool
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight))
            .collect();
        // web.3's node is gone, web.4 is unhealthy.
        assert_eq!(
            b,
            [
                ("10.77.0.11:8000".to_string(), 1),
                ("10.77.0.12:8000".to_string(), 2)
            ]
        );
        let publ = &ls[1];
        assert_eq!(
            publ.place,
            Place::Host {
                via: "front".into()
            }
        );
        assert_eq!(publ.config.listen.to_string(), "198.18.0.1:8080");
        assert_eq!(publ.config.pool.backends, vip.config.pool.backends);
        assert!(publ.config.proxy.send_proxy_v2, "web asks for PROXY v2");
    }

    #[test]
    fn draining_replicas_keep_weight_zero() {
        let mut s = snapshot();
        for e in s.endpoints.values_mut() {
            if e.name == "web.2" {
                e.state = EndpointState::Draining;
            }
        }
        let ls = listeners(&s, &local("n1"));
        let w: Vec<_> = ls[0]
            .config
            .pool
            .backends
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(w, [1, 0]);
    }
}
