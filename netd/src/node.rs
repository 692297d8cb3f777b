//! One node's reconcile: a snapshot in, the kernel, DNS and the balancer
//! made to match it. Level-triggered: every call computes the full desired
//! state ([`crate::translate`]) and each room applies only the difference
//! (the overlay's plan, DNS's snapshot swap, the balancer's reload), so a
//! missed event or a restart leaves nothing stale.
//!
//! Order matters: the overlay first (it makes the sandboxes and puts VIPs
//! and lb addresses on their bridges), then DNS servers on each network's
//! gateway inside its sandbox, then the balancer's listeners.
//!
//! The data plane (DNS servers, listeners, proxied connections) can run on
//! a runtime of its own ([`Plane`]), so it outlives the control plane while
//! a new agent takes over ([`crate::handover`]). A listening socket the
//! previous agent handed over is used wherever its key matches, instead of
//! binding anew; [`DataPlane`] gives this node's sockets to a successor.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use shoal_dns::server::{Dns, DnsServer};
use shoal_lb::config::{Config as LbConfig, ListenerConfig};
use shoal_lb::runtime::Runtime;
use shoal_lb::sockets::Sockets;
use shoal_overlay::names::Names;

use crate::handover::{self, Inherited, Key, NsId};
use crate::model::Snapshot;
use crate::netns_sockets::NetnsSockets;
use crate::translate::lb::Place;
use crate::translate::{self, Local};

/// A reconcile step that failed; the previous state stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The overlay could not be applied.
    #[error("overlay: {0}")]
    Overlay(#[source] shoal_overlay::Error),
    /// The thread of a blocking step ended without an answer.
    #[error("{step}: its thread ended: {source}")]
    Worker {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A namespace's socket worker could not be started.
    #[error("namespace {netns}: {source}")]
    Namespace {
        /// The namespace.
        netns: String,
        /// Why.
        #[source]
        source: Box<NamespaceError>,
    },
    /// DNS refused the record set.
    #[error("dns: {0}")]
    Records(#[source] shoal_dns::RecordError),
    /// A network's DNS server could not be started.
    #[error("dns of network {network}: {source}")]
    DnsServer {
        /// The network.
        network: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The balancer refused its configuration.
    #[error("balancer: {0}")]
    Lb(#[source] shoal_lb::runtime::RuntimeError),
}

/// Why a namespace's socket worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Enter(#[from] shoal_overlay::Error),
    /// The namespace's identity could not be read from inside.
    #[error("read its identity: {0}")]
    Identity(#[from] io::Error),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The identity of the namespace `netns` (a name under /run/netns, or a
/// path) names now; `None` if it names none.
fn netns_id(netns: &str) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::Path::new(shoal_overlay::netns::NETNS_DIR).join(netns);
    std::fs::metadata(path).ok().map(|m| NsId(m.ino()))
}

/// Where the node's data plane runs and which sockets it starts from.
#[derive(Debug, Clone, Default)]
pub struct Plane {
    /// The runtime that runs DNS servers, listeners and proxied
    /// connections (default: the caller's).
    pub runtime: Option<tokio::runtime::Handle>,
    /// Sockets a previous agent handed over: each is used instead of
    /// binding anew where its key matches; the rest are closed after the
    /// first successful reconcile.
    pub inherited: Arc<Inherited>,
}

/// The namespace of each balancer listener's socket, by (name, address),
/// as bound.
type Bound = Arc<Mutex<HashMap<(String, SocketAddr), NsId>>>;

/// A listener's sockets: listening in one namespace (on a handed-over
/// socket where there is one), connecting from a sandbox. For a published
/// port the two differ: it listens on the host and reaches replicas
/// through the sandbox.
#[derive(Debug)]
struct Placed {
    name: String,
    listen: Arc<NetnsSockets>,
    listen_ns: NsId,
    outbound: Arc<NetnsSockets>,
    inherited: Arc<Inherited>,
    bound: Bound,
}

impl Sockets for Placed {
    fn outbound(&self, to: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        self.outbound.outbound(to)
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let l = match self.inherited.tcp_listener(self.listen_ns, addr) {
            Some(l) => tokio::net::TcpListener::from_std(l)?,
            None => self.listen.listen(addr)?,
        };
        lock(&self.bound).insert((self.name.clone(), addr), self.listen_ns);
        Ok(l)
    }
}

/// A network's DNS server, with what a successor needs of its sockets.
struct Served {
    server: DnsServer,
    netns: NsId,
    addr: SocketAddr,
    /// Duplicates of the served sockets; they close with the server.
    udp: OwnedFd,
    tcp: OwnedFd,
}

/// The node's running rooms.
pub struct NodeRuntime {
    local: Local,
    names: Names,
    plane: Plane,
    dns: Arc<Dns>,
    dns_servers: Arc<Mutex<BTreeMap<String, Served>>>,
    lb: Option<Arc<Runtime>>,
    /// The balancer once it runs, for metrics.
    lb_shared: Arc<OnceLock<Arc<Runtime>>>,
    /// Sockets per listener name, read by the balancer when it binds.
    lb_sockets: Arc<Mutex<HashMap<String, Arc<dyn Sockets>>>>,
    bound: Bound,
    /// One namespace worker per (namespace, source address), with the
    /// namespace it entered.
    workers: HashMap<(String, Option<IpAddr>), (Arc<NetnsSockets>, NsId)>,
    reconciled_once: bool,
    /// The last reconcile left a listener out.
    incomplete: bool,
}

impl NodeRuntime {
    /// Rooms for the node `local` describes; nothing runs until the first
    /// [`NodeRuntime::reconcile`].
    pub fn new(local: Local) -> NodeRuntime {
        NodeRuntime::with_plane(local, Plane::default())
    }

    /// As [`NodeRuntime::new`], with the data plane where `plane` says.
    pub fn with_plane(local: Local, plane: Plane) -> NodeRuntime {
        NodeRuntime {
            names: Names::new(&local.node),
            local,
            plane,
            dns: Arc::new(Dns::new(shoal_dns::Snapshot::empty())),
            dns_servers: Arc::new(Mutex::new(BTreeMap::new())),
            lb: None,
            lb_shared: Arc::new(OnceLock::new()),
            lb_sockets: Arc::new(Mutex::new(HashMap::new())),
            bound: Arc::new(Mutex::new(HashMap::new())),
            workers: HashMap::new(),
            reconciled_once: false,
            incomplete: false,
        }
    }

    /// The worker of `netns` (with `source`), made once and kept while
    /// the name leads to the same namespace: a sandbox deleted and made
    /// again (its network removed and created anew) gets a new worker, so
    /// nothing is made in the old namespace any more.
    fn worker(
        &mut self,
        netns: &str,
        source: Option<IpAddr>,
    ) -> Result<(Arc<NetnsSockets>, NsId), ReconcileError> {
        if let Some((w, ns)) = self.workers.get(&(netns.to_string(), source)) {
            match netns_id(netns) {
                Some(now) if now != *ns => {
                    tracing::info!(%netns, "the namespace was made again; entering the new one");
                }
                _ => return Ok((Arc::clone(w), *ns)),
            }
        }
        let failed = |source: NamespaceError| ReconcileError::Namespace {
            netns: netns.to_string(),
            source: Box::new(source),
        };
        let w = Arc::new(NetnsSockets::new(netns, source).map_err(|e| failed(e.into()))?);
        let ns = w
            .run(handover::current_netns)
            .map_err(|e| failed(e.into()))?;
        self.workers
            .insert((netns.to_string(), source), (Arc::clone(&w), ns));
        Ok((w, ns))
    }

    /// Serves `network`'s DNS on `addr` in `w`'s namespace: on the sockets
    /// handed over for it, or on new ones.
    fn serve_dns(
        &self,
        network: &str,
        w: &NetnsSockets,
        netns: NsId,
        addr: SocketAddr,
    ) -> io::Result<Served> {
        let inherited = &self.plane.inherited;
        let udp = match inherited.udp_socket(netns, addr) {
            Some(s) => s,
            None => w.run(move || std::net::UdpSocket::bind(addr))?,
        };
        let tcp = match inherited.tcp_listener(netns, addr) {
            Some(l) => l,
            None => w.run(move || std::net::TcpListener::bind(addr))?,
        };
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let (udp_dup, tcp_dup) = (
            udp.as_fd().try_clone_to_owned()?,
            tcp.as_fd().try_clone_to_owned()?,
        );
        let _in_plane = self.plane.runtime.as_ref().map(|h| h.enter());
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        Ok(Served {
            server: self.dns.serve(network, vec![udp], vec![tcp]),
            netns,
            addr,
            udp: udp_dup,
            tcp: tcp_dup,
        })
    }

    /// Makes the node match `snap`.
    pub async fn reconcile(&mut self, snap: &Snapshot) -> Result<(), ReconcileError> {
        // 1. The datapath.
        let config = translate::overlay::overlay_config(snap, &self.local);
        tokio::task::spawn_blocking(move || {
            shoal_overlay::Overlay::new(config)
                .and_then(|o| o.apply())
                .map(|_| ())
        })
        .await
        .map_err(|source| ReconcileError::Worker {
            step: "overlay",
            source,
        })?
        .map_err(ReconcileError::Overlay)?;

        // 2. DNS: new records, a server per network on its gateway.
        self.dns
            .update(&translate::dns::record_set(snap))
            .map_err(ReconcileError::Records)?;
        for net in snap.networks.values() {
            if net.encrypted {
                continue;
            }
            let sandbox = self.names.sandbox(&net.name);
            let (w, ns) = self.worker(&sandbox, None)?;
            let serving = lock(&self.dns_servers).get(&net.name).map(|s| s.netns);
            if serving == Some(ns) {
                continue;
            }
            // Served in a sandbox since deleted and made again: serve anew.
            let stale = lock(&self.dns_servers).remove(&net.name);
            if let Some(s) = stale {
                let _ = s.server.shutdown().await;
            }
            let addr = SocketAddr::new(IpAddr::V4(net.gateway), 53);
            let served = self.serve_dns(&net.name, &w, ns, addr).map_err(|source| {
                ReconcileError::DnsServer {
                    network: net.name.clone(),
                    source,
                }
            })?;
            lock(&self.dns_servers).insert(net.name.clone(), served);
        }
        let gone: Vec<Served> = {
            let mut servers = lock(&self.dns_servers);
            let names: Vec<String> = servers
                .keys()
                .filter(|n| !snap.networks.contains_key(*n))
                .cloned()
                .collect();
            names.iter().filter_map(|n| servers.remove(n)).collect()
        };
        for s in gone {
            let _ = s.server.shutdown().await;
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
            let (outbound, sandbox_ns) = self.worker(&sandbox, source)?;
            let (listen, listen_ns) = match listen_ns {
                None => (Arc::clone(&outbound), sandbox_ns),
                Some(host) => {
                    let host_ns = host.unwrap_or_else(|| "/proc/self/ns/net".to_string());
                    self.worker(&host_ns, None)?
                }
            };
            let s = Placed {
                name: p.config.name.clone(),
                listen,
                listen_ns,
                outbound,
                inherited: Arc::clone(&self.plane.inherited),
                bound: Arc::clone(&self.bound),
            };
            sockets.insert(p.config.name.clone(), Arc::new(s) as Arc<dyn Sockets>);
        }
        lock(&self.bound).retain(|(name, _), _| sockets.contains_key(name));
        *lock(&self.lb_sockets) = sockets;
        let mut config = LbConfig {
            admin: None,
            drain_timeout: Duration::from_secs(30),
            listeners: placed.into_iter().map(|p| p.config).collect(),
        };
        self.incomplete = false;
        // A listener whose address cannot be bound here (a published port
        // some other program holds on this host) is left out, loudly, so
        // it does not hold back every other listener's changes; the next
        // reconcile tries it again.
        loop {
            match self.apply_lb(config.clone()) {
                Ok(()) => break,
                Err(shoal_lb::runtime::RuntimeError::Bind { name, addr, source })
                    if config.listeners.iter().any(|l| l.name == name) =>
                {
                    tracing::error!(listener = %name, %addr, error = %source, "cannot listen here; serving the other listeners without it");
                    config.listeners.retain(|l| l.name != name);
                    self.incomplete = true;
                }
                Err(e) => return Err(ReconcileError::Lb(e)),
            }
        }

        if !self.reconciled_once {
            self.reconciled_once = true;
            self.plane.inherited.close_unclaimed();
        }
        Ok(())
    }

    /// Starts or reloads the balancer, on the data plane's runtime.
    fn apply_lb(&mut self, config: LbConfig) -> Result<(), shoal_lb::runtime::RuntimeError> {
        let _in_plane = self.plane.runtime.as_ref().map(|h| h.enter());
        match &self.lb {
            Some(rt) => rt.apply(config),
            None => {
                let table = Arc::clone(&self.lb_sockets);
                let rt = Runtime::start_with(
                    config,
                    Arc::new(move |l: &ListenerConfig| {
                        lock(&table)
                            .get(&l.name)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(shoal_lb::sockets::Local))
                    }),
                )?;
                let _ = self.lb_shared.set(Arc::clone(&rt));
                self.lb = Some(rt);
                Ok(())
            }
        }
    }

    /// Whether the last reconcile left a listener out (its address could
    /// not be bound); the agent then tries again soon without a change.
    pub fn incomplete(&self) -> bool {
        self.incomplete
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
            .map(|(w, _)| w as Arc<dyn Sockets>)
    }

    /// The balancer, once the first reconcile has started it.
    pub fn lb(&self) -> Arc<OnceLock<Arc<Runtime>>> {
        Arc::clone(&self.lb_shared)
    }

    /// A handle on the node's serving sockets, for a handover.
    pub fn data_plane(&self) -> DataPlane {
        DataPlane {
            lb: Arc::clone(&self.lb_shared),
            dns_servers: Arc::clone(&self.dns_servers),
            bound: Arc::clone(&self.bound),
        }
    }

    /// The DNS rooms (for tests and metrics).
    pub fn dns(&self) -> &Arc<Dns> {
        &self.dns
    }
}

/// The node's serving sockets and their servers, shared with the
/// [`NodeRuntime`] that makes them; what a running agent hands to its
/// successor and then stops.
#[derive(Clone)]
pub struct DataPlane {
    lb: Arc<OnceLock<Arc<Runtime>>>,
    dns_servers: Arc<Mutex<BTreeMap<String, Served>>>,
    bound: Bound,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("lb", &self.lb.get().map(|rt| rt.listeners().len()))
            .field("dns", &lock(&self.dns_servers).keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DataPlane {
    /// Duplicates of every socket the node serves on, keyed for a
    /// successor: each balancer listener that still accepts, and each
    /// network's DNS sockets (UDP and TCP).
    pub fn listening_sockets(&self) -> Vec<(Key, OwnedFd)> {
        let mut out = Vec::new();
        let mut keep = |key: Key, fd: io::Result<OwnedFd>| match fd {
            Ok(fd) => out.push((key, fd)),
            Err(e) => {
                tracing::warn!(socket = %key, error = %e, "cannot duplicate a socket for the successor")
            }
        };
        if let Some(rt) = self.lb.get() {
            let bound = lock(&self.bound).clone();
            for l in rt.listeners() {
                let Some(fd) = l.dup_socket() else { continue };
                match bound.get(&(l.name().to_string(), l.addr())) {
                    Some(&netns) => keep(
                        Key::Tcp {
                            netns,
                            addr: l.addr(),
                        },
                        fd,
                    ),
                    None => {
                        tracing::warn!(listener = %l.name(), "a listener of unknown namespace; not handed over")
                    }
                }
            }
        }
        for s in lock(&self.dns_servers).values() {
            let (netns, addr) = (s.netns, s.addr);
            keep(Key::Udp { netns, addr }, s.udp.try_clone());
            keep(Key::Tcp { netns, addr }, s.tcp.try_clone());
        }
        out
    }

    /// Stops serving: DNS stops answering and the balancer accepting (this
    /// process's copies of the sockets close), then waits up to `deadline`
    /// for open connections. True if they all finished.
    pub async fn stop(&self, deadline: Duration) -> bool {
        let servers: Vec<Served> = std::mem::take(&mut *lock(&self.dns_servers))
            .into_values()
            .collect();
        let dns = async {
            for s in servers {
                let _ = s.server.shutdown().await;
            }
        };
        let lb = async {
            match self.lb.get() {
                Some(rt) => rt.drain(deadline).await,
                None => true,
            }
        };
        let (drained, dns) = tokio::join!(lb, tokio::time::timeout(deadline, dns));
        drained && dns.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerNs;

    #[test]
    fn a_sandbox_made_again_gets_a_new_worker() {
        let node = format!("unit{}", std::process::id());
        let mut rt = NodeRuntime::new(Local {
            node: node.clone(),
            netns: None,
            underlay: std::net::Ipv4Addr::new(198, 18, 0, 1),
            containers: BTreeMap::new(),
        });
        let sandbox = rt.names.sandbox("front");
        /// Removes the namespace, panic or not.
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = ContainerNs::remove(&self.0);
            }
        }
        let _gone = Gone(sandbox.clone());
        ContainerNs::create(&sandbox).unwrap();
        let (_, first) = rt.worker(&sandbox, None).unwrap();
        assert_eq!(rt.worker(&sandbox, None).unwrap().1, first, "kept");
        // The network goes and comes back: its sandbox is a new namespace.
        ContainerNs::remove(&sandbox).unwrap();
        ContainerNs::create(&sandbox).unwrap();
        let (w, second) = rt.worker(&sandbox, None).unwrap();
        assert_ne!(second, first);
        assert_eq!(Some(second), netns_id(&sandbox));
        assert_eq!(w.run(handover::current_netns).unwrap(), second);
    }
}
