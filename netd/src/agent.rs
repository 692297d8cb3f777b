//! The agent loop of one node: keep the node's lease, follow the store,
//! reconcile on every change and keep the node's replicas checked (changes arriving together are applied
//! together). A failed reconcile is logged and retried on the next change
//! or after a short delay; the data plane keeps its last good state
//! meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::follow::follow;
use crate::health::HealthChecks;
use crate::ipam::Ipam;
use crate::liveness::{keep_alive, Owned};
use crate::model::{keys, EndpointState, Node, Snapshot};
use crate::node::{DataPlane, NodeRuntime, Plane};
use crate::store::{Revision, Store};
use crate::translate::Local;

/// How long the loop waits for more changes before reconciling.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// How long a node waits for its requests and connections in flight to a
/// draining replica before it acknowledges the drain anyway (below the
/// owner's own deadline, `tasks::ACK_DEADLINE`).
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Requests (HTTP mode) and connections (TCP mode) this node's balancers
/// have open to `ip` now, over every listener.
fn open_to(
    lb: &std::sync::OnceLock<Arc<shoal_lb::runtime::Runtime>>,
    ip: std::net::Ipv4Addr,
) -> u64 {
    endpoints_at(lb, ip).iter().map(|e| e.active()).sum()
}

/// Every balancer endpoint at address `ip`, across listeners.
fn endpoints_at(
    lb: &std::sync::OnceLock<Arc<shoal_lb::runtime::Runtime>>,
    ip: std::net::Ipv4Addr,
) -> Vec<Arc<shoal_lb::endpoint::Endpoint>> {
    let Some(rt) = lb.get() else {
        return Vec::new();
    };
    rt.listeners()
        .iter()
        .flat_map(|l| {
            l.pool()
                .endpoints()
                .iter()
                .filter(|e| e.addr().ip() == std::net::IpAddr::V4(ip))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Returns once the balancers have no connection or request open to `ip`:
/// woken by each endpoint's last connection ending, never polled.
async fn all_closed(
    lb: &std::sync::OnceLock<Arc<shoal_lb::runtime::Runtime>>,
    ip: std::net::Ipv4Addr,
) {
    while let Some(busy) = endpoints_at(lb, ip).into_iter().find(|e| e.active() > 0) {
        busy.wait_idle().await;
    }
}

/// How soon a failed reconcile is tried again without a new change.
pub const RETRY: Duration = Duration::from_secs(2);

/// The namespaces of this node's containers, by (network, endpoint name);
/// shared by the agent loop and whoever starts tasks.
pub type Containers = Arc<Mutex<BTreeMap<(String, String), String>>>;

/// Counters of the reconcile loop.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reconciles that succeeded.
    pub reconciles: AtomicU64,
    /// Reconciles that failed (retried).
    pub failures: AtomicU64,
    /// Microseconds the last successful reconcile took.
    pub last_micros: AtomicU64,
}

impl Stats {
    /// Prometheus text for these counters.
    pub fn render(&self, applied: Revision) -> String {
        use shoal_lb::metrics::Family;
        let mut reconciles =
            Family::new("netd_reconciles_total", "counter", "Reconciles by result.");
        reconciles.add("result=\"ok\"", self.reconciles.load(Ordering::Relaxed));
        reconciles.add("result=\"error\"", self.failures.load(Ordering::Relaxed));
        let mut last = Family::new(
            "netd_reconcile_last_seconds",
            "gauge",
            "How long the last successful reconcile took.",
        );
        last.add("", self.last_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let mut revision = Family::new(
            "netd_applied_revision",
            "gauge",
            "The store revision this node has applied.",
        );
        revision.add("", applied);
        let mut out = String::new();
        for f in [reconciles, last, revision] {
            f.write_to(&mut out);
        }
        out
    }
}

/// Handles of a running agent.
#[derive(Debug)]
pub struct Agent {
    /// The revision of the last snapshot applied without error.
    pub reconciled: watch::Receiver<Revision>,
    /// The last snapshot applied without error.
    pub applied: watch::Receiver<Arc<Snapshot>>,
    /// What this node owns in the store.
    pub owned: Arc<Owned>,
    /// This node's containers; add one before writing its endpoint.
    pub containers: Containers,
    /// The node's balancer once it runs.
    pub lb: Arc<std::sync::OnceLock<Arc<shoal_lb::runtime::Runtime>>>,
    /// The node's serving sockets, for a handover to a new agent.
    pub data_plane: DataPlane,
    /// Reconcile counters.
    pub stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Starts the agent of `node` (described to the kernel by `local`).
    pub fn start(store: Arc<dyn Store>, node: Node, local: Local, lease_ttl: Duration) -> Agent {
        Self::start_with(store, node, local, lease_ttl, Plane::default())
    }

    /// As [`Agent::start`], with the data plane where `plane` says (its own
    /// runtime, sockets handed over by a previous agent).
    pub fn start_with(
        store: Arc<dyn Store>,
        node: Node,
        local: Local,
        lease_ttl: Duration,
        plane: Plane,
    ) -> Agent {
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, reconciled) = watch::channel(0);
        let (applied_tx, applied) = watch::channel(Arc::new(Snapshot::default()));
        let containers: Containers = Arc::new(Mutex::new(local.containers.clone()));
        let owned = Owned::new(node);
        tokio::spawn(keep_alive(
            Arc::clone(&store),
            Arc::clone(&owned),
            lease_ttl,
            stop_rx.clone(),
        ));
        let (snap_tx, snaps) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(follow(Arc::clone(&store), snap_tx, stop_rx.clone()));
        let checks = HealthChecks::new(Arc::clone(&store), &local.node, Some(Arc::clone(&owned)));
        let rt = NodeRuntime::with_plane(local, plane);
        let lb = rt.lb();
        let data_plane = rt.data_plane();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(reconcile_loop(
            Loop {
                stats: Arc::clone(&stats),
                rt,
                checks,
                owned: Arc::clone(&owned),
                store: Arc::clone(&store),
                containers: Arc::clone(&containers),
                acked: BTreeSet::new(),
            },
            snaps,
            (done_tx, applied_tx),
            stop_rx,
        ));
        Agent {
            reconciled,
            applied,
            owned,
            containers,
            lb,
            data_plane,
            stats,
            stop,
            task,
        }
    }

    /// Waits until a snapshot at or past `revision` has been applied.
    pub async fn converged(&mut self, revision: Revision) {
        let _ = self.reconciled.wait_for(|r| *r >= revision).await;
    }

    /// Stops following and reconciling; the data plane stays as it is.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Gives this node an lb address (from its own IPAM blocks) in every clear
/// network, and returns the snapshot as it will read once those writes
/// arrive. An address is checked against IPAM each time: a network removed
/// and created again under the same name frees the old address, which must
/// not stay on the bridge (a task may be handed it). Addresses of networks
/// that are gone are dropped. With the store away, what the node has stays.
async fn ensure_lb_addresses(store: &dyn Store, owned: &Owned, snap: &Snapshot) -> Snapshot {
    let mut snap = snap.clone();
    let mut node = owned.node();
    let before = node.lb_addresses.clone();
    node.lb_addresses
        .retain(|n, _| snap.networks.get(n).is_some_and(|net| !net.encrypted));
    let owner = format!("lb:{}", node.name);
    for net in snap.networks.values().filter(|n| !n.encrypted) {
        let ipam = Ipam {
            network: net.name.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            node: node.name.clone(),
        };
        let held = match ipam.find(store, &owner).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(network = %net.name, error = %e, "cannot check the lb address now; keeping it");
                continue;
            }
        };
        if held.is_some() && held == node.lb_addresses.get(&net.name).copied() {
            continue;
        }
        match ipam.allocate(store, &owner).await {
            Ok(ip) => {
                tracing::info!(network = %net.name, %ip, "this node's lb address");
                node.lb_addresses.insert(net.name.clone(), ip);
            }
            Err(e) => {
                node.lb_addresses.remove(&net.name);
                tracing::warn!(network = %net.name, error = %e, "no lb address for this node")
            }
        }
    }
    if node.lb_addresses != before {
        if let Err(e) = owned
            .set_lb_addresses(store, node.lb_addresses.clone())
            .await
        {
            tracing::warn!(error = %e, "cannot record the lb addresses; retrying on the next change");
        }
    }
    snap.nodes.insert(node.name.clone(), node);
    snap
}

/// What the reconcile loop works with.
struct Loop {
    stats: Arc<Stats>,
    rt: NodeRuntime,
    checks: HealthChecks,
    owned: Arc<Owned>,
    store: Arc<dyn Store>,
    containers: Containers,
    /// Draining endpoints this node has acknowledged, by (network, name).
    acked: BTreeSet<(String, String)>,
}

impl Loop {
    /// Tells the owners of draining endpoints that this node no longer
    /// sends them new traffic and has no request or connection to them in
    /// flight (`ack/<network>/<endpoint>/<node>` on this node's lease);
    /// they stop a replica once every live node has said so. A node still
    /// carrying connections to it says so when they have ended, or after
    /// [`IN_FLIGHT_GRACE`], from a task of its own.
    async fn acknowledge_draining(&mut self, snap: &Snapshot) {
        let me = self.owned.node().name;
        let draining: BTreeSet<(String, String)> = snap
            .endpoints
            .iter()
            .filter(|(_, e)| e.state == EndpointState::Draining)
            .map(|(k, _)| k.clone())
            .collect();
        self.acked.retain(|k| draining.contains(k));
        for (net, name) in draining {
            if self.acked.contains(&(net.clone(), name.clone())) {
                continue;
            }
            let key = keys::ack(&net, &name, &me);
            let lb = self.rt.lb();
            let busy = snap
                .endpoints
                .get(&(net.clone(), name.clone()))
                .map(|e| e.ip)
                .filter(|ip| open_to(&lb, *ip) > 0);
            if let Some(ip) = busy {
                let (store, lease, rev) =
                    (Arc::clone(&self.store), self.owned.lease(), snap.revision);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(IN_FLIGHT_GRACE, all_closed(&lb, ip)).await;
                    for _ in 0..3 {
                        match store.put(&key, rev.to_string().into_bytes(), lease).await {
                            Ok(_) => return,
                            Err(e) => {
                                tracing::warn!(error = %e, %key, "cannot acknowledge a draining replica");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                });
                self.acked.insert((net, name));
                continue;
            }
            match self
                .store
                .put(
                    &key,
                    snap.revision.to_string().into_bytes(),
                    self.owned.lease(),
                )
                .await
            {
                Ok(_) => {
                    self.acked.insert((net, name));
                }
                Err(e) => tracing::warn!(error = %e, %key, "cannot acknowledge a draining replica"),
            }
        }
    }
}

async fn reconcile_loop(
    mut l: Loop,
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    (done, applied): (watch::Sender<Revision>, watch::Sender<Arc<Snapshot>>),
    mut stop: watch::Receiver<bool>,
) {
    let mut pending_retry = false;
    loop {
        let woke = if pending_retry {
            tokio::select! {
                r = snaps.changed() => r.is_ok(),
                _ = tokio::time::sleep(RETRY) => true,
                _ = stop.changed() => return,
            }
        } else {
            tokio::select! {
                r = snaps.changed() => r.is_ok(),
                _ = stop.changed() => return,
            }
        };
        if !woke {
            return;
        }
        tokio::time::sleep(DEBOUNCE).await;
        let latest = snaps.borrow_and_update().clone();
        let snap = ensure_lb_addresses(l.store.as_ref(), &l.owned, &latest).await;
        let containers = l
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        l.rt.set_containers(containers);
        let started = std::time::Instant::now();
        match l.rt.reconcile(&snap).await {
            Ok(()) => {
                pending_retry = l.rt.incomplete();
                l.stats.reconciles.fetch_add(1, Ordering::Relaxed);
                l.stats
                    .last_micros
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                let rt = &mut l.rt;
                l.checks.sync(&snap, |net| rt.sandbox_sockets(net));
                l.acknowledge_draining(&snap).await;
                if let Err(e) = l.owned.reassert_missing(l.store.as_ref(), &latest).await {
                    tracing::warn!(error = %e, "cannot check this node's endpoints in the store now");
                }
                applied.send_replace(Arc::new(snap.clone()));
                done.send_replace(snap.revision);
            }
            Err(e) => {
                pending_retry = true;
                l.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, revision = snap.revision, "reconcile failed; the previous state stays, retrying");
            }
        }
    }
}
