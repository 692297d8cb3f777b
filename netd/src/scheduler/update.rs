//! Rolling updates: replicas started with another command than their
//! service's are replaced one at a time across the cluster.
//!
//! A node replaces one of its outdated replicas of a service only while it
//! holds the service's update lock, `update/<service>`, created by
//! compare-and-swap on its lease (so a dead node's lock ends with it), and
//! only once every slot of the service it holds has a healthy replica. It
//! keeps the lock until the replacement is healthy, then replaces its next
//! outdated replica or releases the lock, and another node takes its turn.
//! A replacement that never becomes healthy keeps the lock: the update
//! pauses there (as Docker's `failure_action: pause`) until the service
//! changes again.
//!
//! The next node's replica is drained only once every node has
//! acknowledged its draining mark, a revision after the lock was released
//! and so after the previous replacement was recorded healthy: no node's
//! balancer has two of the service's replicas out at once.

use std::collections::BTreeMap;

use super::{runnable, wanted, Claim, Scheduler, Slot};
use crate::model::{EndpointState, Snapshot};
use crate::store::{LeaseId, Revision, StoreError};
use crate::tasks::Task;

const PREFIX: &str = "update/";

/// The key of a service's update lock.
pub(super) fn lock_key(service: &str) -> String {
    format!("{PREFIX}{service}")
}

/// A lock as read from the store.
struct Lock {
    node: String,
    rev: Revision,
    lease: LeaseId,
}

impl Scheduler {
    /// Every update lock, by service.
    async fn locks(&self) -> Result<BTreeMap<String, Lock>, StoreError> {
        let (entries, _) = self.store.range(PREFIX).await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let svc = e.key.strip_prefix(PREFIX)?.to_string();
                let lock = Lock {
                    node: String::from_utf8_lossy(&e.value).into_owned(),
                    rev: e.mod_revision,
                    lease: e.lease,
                };
                Some((svc, lock))
            })
            .collect())
    }

    /// Releases this node's locks of services that no longer run replicas
    /// and moves the others onto the lease in force; returns the locks.
    async fn own_locks(
        &self,
        snap: &Snapshot,
        me: &str,
    ) -> Result<BTreeMap<String, Lock>, StoreError> {
        let lease = self.owned.lease();
        let mut locks = self.locks().await?;
        let mut changed = false;
        for (svc, l) in locks.iter().filter(|(_, l)| l.node == me) {
            let key = lock_key(svc);
            if !snap.services.get(svc).is_some_and(runnable) {
                changed |= self.store.delete_if(&key, l.rev).await?;
            } else if lease != 0 && l.lease != lease {
                changed |= self
                    .store
                    .put_if(&key, l.rev, me.as_bytes().to_vec(), lease)
                    .await?;
            }
        }
        if changed {
            locks = self.locks().await?;
        }
        Ok(locks)
    }

    /// Replaces, per service, one local replica started with another
    /// command than the service's, holding the service's update lock (see
    /// the [module docs](self)).
    pub(super) async fn replace_outdated(
        &mut self,
        snap: &Snapshot,
        me: &str,
        claims: &BTreeMap<Slot, Claim>,
        local: &BTreeMap<Slot, Task>,
    ) -> Result<(), StoreError> {
        let lease = self.owned.lease();
        let locks = self.own_locks(snap, me).await?;
        for svc in snap.services.values().filter(|s| runnable(s)) {
            let lock = locks.get(&svc.name);
            if lock.is_some_and(|l| l.node != me) {
                // Another node's turn.
                continue;
            }
            let held: Vec<&Slot> = claims
                .iter()
                .filter(|(slot, c)| slot.0 == svc.name && c.node == me && wanted(snap, slot))
                .map(|(slot, _)| slot)
                .collect();
            let serving = |slot: &Slot| {
                local.get(slot).is_some_and(|t| {
                    !self.is_stopping(&t.name)
                        && snap
                            .endpoints
                            .get(&(t.network.clone(), t.name.clone()))
                            .is_some_and(|e| e.state == EndpointState::Healthy)
                })
            };
            if !held.iter().all(|slot| serving(slot)) {
                // Not while a replica of ours is starting, failing or being
                // replaced (the lock, if ours, is kept until it serves).
                continue;
            }
            let outdated = held.into_iter().find_map(|slot| {
                let t = local.get(slot)?;
                (!t.command.is_empty() && t.command != svc.command).then_some((slot, t))
            });
            let key = lock_key(&svc.name);
            let Some((slot, task)) = outdated else {
                if let Some(l) = lock {
                    // Our turn is over.
                    self.store.delete_if(&key, l.rev).await?;
                    tracing::info!(service = %svc.name, "replicas of this node updated; released the update lock");
                }
                continue;
            };
            if lock.is_none() {
                if lease == 0
                    || !self
                        .store
                        .put_if(&key, 0, me.as_bytes().to_vec(), lease)
                        .await?
                {
                    continue;
                }
                tracing::info!(service = %svc.name, "took the update lock");
            }
            tracing::info!(task = %task.name, "the service's command changed; replacing the replica");
            // The replacement starts as soon as the old one is gone.
            self.runs.remove(slot);
            self.stop(task.name.clone(), None);
        }
        Ok(())
    }
}
