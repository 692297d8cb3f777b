//! The agent loop of one node: keep the node's lease, follow the store,
//! reconcile on every change and keep the node's replicas checked (changes arriving together are applied
//! together). A failed reconcile is logged and retried on the next change
//! or after a short delay; the data plane keeps its last good state
//! meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::follow::follow;
use crate::health::HealthChecks;
use crate::ipam::Ipam;
use crate::liveness::{keep_alive, Owned};
use crate::model::{Node, Snapshot};
use crate::node::NodeRuntime;
use crate::store::{Revision, Store};
use crate::translate::Local;

/// How long the loop waits for more changes before reconciling.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// How soon a failed reconcile is tried again without a new change.
pub const RETRY: Duration = Duration::from_secs(2);

/// Handles of a running agent.
#[derive(Debug)]
pub struct Agent {
    /// The revision of the last snapshot applied without error.
    pub reconciled: watch::Receiver<Revision>,
    /// What this node owns in the store.
    pub owned: Arc<Owned>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Starts the agent of `node` (described to the kernel by `local`).
    pub fn start(store: Arc<dyn Store>, node: Node, local: Local, lease_ttl: Duration) -> Agent {
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, reconciled) = watch::channel(0);
        let owned = Owned::new(node);
        tokio::spawn(keep_alive(
            Arc::clone(&store),
            Arc::clone(&owned),
            lease_ttl,
            stop_rx.clone(),
        ));
        let (snap_tx, snaps) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(follow(Arc::clone(&store), snap_tx, stop_rx.clone()));
        let checks = HealthChecks::new(Arc::clone(&store), &local.node);
        let task = tokio::spawn(reconcile_loop(
            NodeRuntime::new(local),
            checks,
            Arc::clone(&owned),
            Arc::clone(&store),
            snaps,
            done_tx,
            stop_rx,
        ));
        Agent {
            reconciled,
            owned,
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
/// network that lacks one, and returns the snapshot as it will read once
/// those writes arrive.
async fn ensure_lb_addresses(store: &dyn Store, owned: &Owned, snap: &Snapshot) -> Snapshot {
    let mut snap = snap.clone();
    let mut node = owned.node();
    for net in snap.networks.values().filter(|n| !n.encrypted) {
        if node.lb_addresses.contains_key(&net.name) {
            continue;
        }
        let ipam = Ipam {
            network: net.name.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            node: node.name.clone(),
        };
        match ipam.allocate(store, &format!("lb:{}", node.name)).await {
            Ok(ip) => match owned.set_lb_address(store, &net.name, ip).await {
                Ok(()) => {
                    tracing::info!(network = %net.name, %ip, "this node's lb address");
                    node.lb_addresses.insert(net.name.clone(), ip);
                }
                Err(e) => {
                    tracing::warn!(network = %net.name, error = %e, "cannot record the lb address")
                }
            },
            Err(e) => {
                tracing::warn!(network = %net.name, error = %e, "no lb address for this node")
            }
        }
    }
    snap.nodes.insert(node.name.clone(), node);
    snap
}

async fn reconcile_loop(
    mut rt: NodeRuntime,
    mut checks: HealthChecks,
    owned: Arc<Owned>,
    store: Arc<dyn Store>,
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    done: watch::Sender<Revision>,
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
        let snap = ensure_lb_addresses(store.as_ref(), &owned, &latest).await;
        match rt.reconcile(&snap).await {
            Ok(()) => {
                pending_retry = false;
                checks.sync(&snap, |net| rt.sandbox_sockets(net));
                done.send_replace(snap.revision);
            }
            Err(e) => {
                pending_retry = true;
                tracing::error!(error = %e, revision = snap.revision, "reconcile failed; the previous state stays, retrying");
            }
        }
    }
}
