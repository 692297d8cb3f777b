//! One node's reconcile: a snapshot in, the kernel, DNS and the balancer
//! made to match it. Level-triggered: every call computes the full desired
//! state ([`crate::translate`]) and each room applies only the difference
//! (the overlay's plan, DNS's snapshot swap, the balancer's reload), so a
//! missed event or a restart leaves nothing stale.
//!
//! Order matters: the overlay first (it makes the sandboxes and puts VIPs
//! and lb addresses on their bridges), then DNS servers on each network's
//! gateway inside its sandbox, then the balancer's listeners.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use shoal_dns::server::{Dns, DnsServer};
use shoal_lb::config::{Config as LbConfig, ListenerConfig};
use shoal_lb::runtime::Runtime;
use shoal_lb::sockets::Sockets;
use shoal_overlay::names::Names;

use crate::model::Snapshot;
use crate::netns_sockets::NetnsSockets;
use crate::translate::lb::Place;
use crate::translate::{self, Local};

/// A reconcile step that failed; the previous state stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The overlay could not be applied.
    #[error("overlay: {0}")]
    Overlay(String),
    /// DNS could not be updated or served.
    #[error("dns: {0}")]
    Dns(String),
    /// The balancer could not be configured.
    #[error("balancer: {0}")]
    Lb(String),
}

/// Listens in one namespace, connects from another (a published port:
/// listening on the host, reaching replicas through a sandbox).
#[derive(Debug)]
struct Split {
    listen: Arc<NetnsSockets>,
    outbound: Arc<NetnsSockets>,
}

impl Sockets for Split {
    fn outbound(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
        self.outbound.outbound(to)
    }
    fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        self.listen.listen(addr)
    }
}

/// The node's running rooms.
pub struct NodeRuntime {
    local: Local,
    names: Names,
    dns: Arc<Dns>,
    dns_servers: BTreeMap<String, DnsServer>,
    lb: Option<Arc<Runtime>>,
    /// The balancer once it runs, for metrics.
    lb_shared: Arc<std::sync::OnceLock<Arc<Runtime>>>,
    /// Sockets per listener name, read by the balancer when it binds.
    lb_sockets: Arc<Mutex<HashMap<String, Arc<dyn Sockets>>>>,
    /// One namespace worker per (namespace, source address).
    workers: HashMap<(String, Option<IpAddr>), Arc<NetnsSockets>>,
}

impl NodeRuntime {
    /// Rooms for the node `local` describes; nothing runs until the first
    /// [`NodeRuntime::reconcile`].
    pub fn new(local: Local) -> NodeRuntime {
        NodeRuntime {
            names: Names::new(&local.node),
            local,
            dns: Arc::new(Dns::new(shoal_dns::Snapshot::empty())),
            dns_servers: BTreeMap::new(),
            lb: None,
            lb_shared: Arc::new(std::sync::OnceLock::new()),
            lb_sockets: Arc::new(Mutex::new(HashMap::new())),
            workers: HashMap::new(),
        }
    }

    fn worker(&mut self, netns: &str, source: Option<IpAddr>) -> Result<Arc<NetnsSockets>, String> {
        if let Some(w) = self.workers.get(&(netns.to_string(), source)) {
            return Ok(Arc::clone(w));
        }
        let w = Arc::new(NetnsSockets::new(netns, source).map_err(|e| e.to_string())?);
        self.workers
            .insert((netns.to_string(), source), Arc::clone(&w));
        Ok(w)
    }

    /// Makes the node match `snap`.
    pub async fn reconcile(&mut self, snap: &Snapshot) -> Result<(), ReconcileError> {
        // 1. The datapath.
        let config = translate::overlay::overlay_config(snap, &self.local);
        tokio::task::spawn_blocking(move || {
            shoal_overlay::Overlay::new(config)
                .and_then(|o| o.apply())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ReconcileError::Overlay(e.to_string()))?
        .map_err(ReconcileError::Overlay)?;

        // 2. DNS: new records, a server per network on its gateway.
        self.dns
            .update(&translate::dns::record_set(snap))
            .map_err(|e| ReconcileError::Dns(e.to_string()))?;
        for net in snap.networks.values() {
            if net.encrypted || self.dns_servers.contains_key(&net.name) {
                continue;
            }
            let sandbox = self.names.sandbox(&net.name);
            let w = self.worker(&sandbox, None).map_err(ReconcileError::Dns)?;
            let addr = SocketAddr::new(IpAddr::V4(net.gateway), 53);
            let (udp, tcp) = w
                .run(move || {
                    let udp = std::net::UdpSocket::bind(addr)?;
                    udp.set_nonblocking(true)?;
                    let tcp = std::net::TcpListener::bind(addr)?;
                    tcp.set_nonblocking(true)?;
                    Ok((udp, tcp))
                })
                .map_err(|e| ReconcileError::Dns(format!("network {}: {e}", net.name)))?;
            let udp = tokio::net::UdpSocket::from_std(udp)
                .map_err(|e| ReconcileError::Dns(e.to_string()))?;
            let tcp = tokio::net::TcpListener::from_std(tcp)
                .map_err(|e| ReconcileError::Dns(e.to_string()))?;
            let server = self.dns.serve(&net.name, vec![udp], vec![tcp]);
            self.dns_servers.insert(net.name.clone(), server);
        }
        let gone: Vec<String> = self
            .dns_servers
            .keys()
            .filter(|n| !snap.networks.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            if let Some(s) = self.dns_servers.remove(&n) {
                let _ = s.shutdown().await;
            }
        }

        // 3. The balancer: each listener's sockets where its place says.
        let placed = translate::lb::listeners(snap, &self.local);
        let me = snap.nodes.get(&self.local.node);
        let mut sockets: HashMap<String, Arc<dyn Sockets>> = HashMap::new();
        for p in &placed {
            let (net, listen_ns) = match &p.place {
                Place::Sandbox(net) => (net.clone(), None),
                Place::Host { via } => (via.clone(), Some(self.local.netns.clone())),
            };
            let source = me
                .and_then(|n| n.lb_addresses.get(&net))
                .map(|a| IpAddr::V4(*a));
            let sandbox = self.names.sandbox(&net);
            let outbound = self.worker(&sandbox, source).map_err(ReconcileError::Lb)?;
            let s: Arc<dyn Sockets> = match listen_ns {
                None => outbound,
                Some(host) => {
                    let host_ns = host.unwrap_or_else(|| "/proc/self/ns/net".to_string());
                    let listen = self.worker(&host_ns, None).map_err(ReconcileError::Lb)?;
                    Arc::new(Split { listen, outbound })
                }
            };
            sockets.insert(p.config.name.clone(), s);
        }
        *self.lb_sockets.lock().unwrap_or_else(|e| e.into_inner()) = sockets;
        let config = LbConfig {
            admin: None,
            drain_timeout: std::time::Duration::from_secs(30),
            listeners: placed.into_iter().map(|p| p.config).collect(),
        };
        match &self.lb {
            Some(rt) => rt
                .apply(config)
                .map_err(|e| ReconcileError::Lb(e.to_string()))?,
            None => {
                let table = Arc::clone(&self.lb_sockets);
                let rt = Runtime::start_with(
                    config,
                    Arc::new(move |l: &ListenerConfig| {
                        table
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&l.name)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(shoal_lb::sockets::Local))
                    }),
                )
                .map_err(|e| ReconcileError::Lb(e.to_string()))?;
                let _ = self.lb_shared.set(Arc::clone(&rt));
                self.lb = Some(rt);
            }
        }
        Ok(())
    }

    /// Replaces the local containers' namespaces (tasks come and go).
    pub fn set_containers(&mut self, containers: BTreeMap<(String, String), String>) {
        self.local.containers = containers;
    }

    /// Sockets inside `network`'s sandbox (for health checks of replicas).
    pub fn sandbox_sockets(&mut self, network: &str) -> Option<Arc<dyn Sockets>> {
        let sandbox = self.names.sandbox(network);
        self.worker(&sandbox, None)
            .ok()
            .map(|w| w as Arc<dyn Sockets>)
    }

    /// The balancer, once the first reconcile has started it.
    pub fn lb(&self) -> Arc<std::sync::OnceLock<Arc<Runtime>>> {
        Arc::clone(&self.lb_shared)
    }

    /// The DNS rooms (for tests and metrics).
    pub fn dns(&self) -> &Arc<Dns> {
        &self.dns
    }
}
