//! Ending a task (step 3 of its life, see [`super`]): a task whose process
//! still runs is marked draining and stopped once every live node has
//! acknowledged (or after [`ACK_DEADLINE`]); then what the process left in
//! the namespace is killed, the task detached, its address released and
//! the acknowledgements cleared.

use std::time::Duration;

use super::process::kill_leftovers;
use super::{read_json, Ending, Task, Tasks, ACK_DEADLINE, STOP_GRACE};
use crate::container;
use crate::ipam::Ipam;
use crate::model::{keys, Endpoint, EndpointState, Network};
use crate::store::{Revision, StoreError};

impl Tasks {
    /// Ends a task (see the [module docs](super)); false if there was none.
    pub async fn remove(&self, name: &str, ending: Ending) -> bool {
        let Some(task) = self.get(name) else {
            return false;
        };
        let store = self.inner.store.as_ref();
        if ending == Ending::Stop {
            if let Some(pid) = task.pid.filter(|p| container::alive(*p)) {
                self.drain(&task).await;
                match container::stop_process(pid, STOP_GRACE).await {
                    Ok(how) => tracing::info!(task = %name, pid, ?how, "task stopped"),
                    Err(e) => {
                        tracing::warn!(task = %name, pid, error = %e, "cannot stop the task's process")
                    }
                }
            }
        }
        let _guard = self.inner.ops.lock().await;
        if self.lock().remove(name).is_none() {
            return false;
        }
        let _ = self.persist();
        // The task is over once its process is: what it left running in its
        // namespace (children, a shell's pipeline) goes with it, as in a
        // container, rather than living on and holding the namespace.
        let ns = task.netns.clone();
        if let Ok(n @ 1..) = tokio::task::spawn_blocking(move || kill_leftovers(&ns)).await {
            tracing::info!(task = %name, processes = n, "killed what the task's process left running");
        }
        self.detach(&task).await;
        let ipam = match read_json::<Network>(store, &keys::network(&task.network)).await {
            Ok(Some((net, _, _))) => Some(Ipam {
                network: net.name,
                subnet: net.subnet,
                gateway: net.gateway,
                node: self.inner.node.clone(),
            }),
            _ => None,
        };
        if let Some(ipam) = ipam {
            if let Err(e) = ipam.release(store, task.ip).await {
                tracing::warn!(task = %name, error = %e, "cannot release the task's address");
            }
        }
        let _ = self.clear_acks(&task).await;
        true
    }

    /// Marks the task draining and waits until every live node has
    /// acknowledged it (or [`ACK_DEADLINE`]). Only acknowledgements of a
    /// snapshot at or past the draining mark count: one left from an
    /// earlier task of the same name says nothing about this one.
    async fn drain(&self, task: &Task) {
        let store = self.inner.store.as_ref();
        let Some(mut ep) = self.inner.owned.endpoint(&task.network, &task.name) else {
            return;
        };
        ep.state = EndpointState::Draining;
        if let Err(e) = self.inner.owned.set_endpoint(store, ep).await {
            tracing::warn!(task = %task.name, error = %e, "cannot mark the task draining; stopping it anyway");
            return;
        }
        let marked =
            match read_json::<Endpoint>(store, &keys::endpoint(&task.network, &task.name)).await {
                Ok(Some((_, rev, _))) => rev,
                _ => 0,
            };
        let started = tokio::time::Instant::now();
        let mut missing: Vec<String> = Vec::new();
        loop {
            let acked = store.range(&keys::acks(&task.network, &task.name)).await;
            let nodes = store.range("node/").await;
            if let (Ok((acks, _)), Ok((nodes, _))) = (acked, nodes) {
                let said: std::collections::BTreeSet<&str> = acks
                    .iter()
                    .filter(|e| {
                        std::str::from_utf8(&e.value)
                            .ok()
                            .and_then(|v| v.parse::<Revision>().ok())
                            .is_some_and(|r| r >= marked)
                    })
                    .filter_map(|e| e.key.rsplit('/').next())
                    .collect();
                missing = nodes
                    .iter()
                    .filter_map(|e| e.key.strip_prefix("node/"))
                    .filter(|n| !said.contains(n))
                    .map(str::to_string)
                    .collect();
                if missing.is_empty() {
                    tracing::info!(task = %task.name, after = ?started.elapsed(), "every node stopped sending new traffic to the task");
                    return;
                }
            }
            if started.elapsed() >= ACK_DEADLINE {
                tracing::warn!(task = %task.name, ?missing, "nodes did not acknowledge the drain in time; stopping anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn clear_acks(&self, task: &Task) -> Result<(), StoreError> {
        let store = self.inner.store.as_ref();
        let (acks, _) = store.range(&keys::acks(&task.network, &task.name)).await?;
        for a in acks {
            store.delete(&a.key).await?;
        }
        Ok(())
    }
}
