//! Creating a task (step 1 of its life, see [`super`]): the network and
//! service checked, a name chosen, an address allocated, then the
//! namespace, resolv.conf, container entry and endpoint (all under the
//! registry's lock), and a wait until this node's datapath has attached it
//! (without: creates wait side by side). [`Tasks::detach`] undoes the
//! attachment, for a failed create and for a removed task alike.

use std::path::PathBuf;

use super::{read_json, Ending, Task, TaskSpec, Tasks, ATTACH_DEADLINE, PID_DEADLINE};
use crate::container::{self, ContainerNs};
use crate::ipam::Ipam;
use crate::model::{keys, valid_name, Endpoint, EndpointState, Network, Service};
use crate::ops::OpError;
use crate::store::Revision;

fn netns_name(node: &str, task: &str) -> String {
    format!("shoal-t.{node}.{task}")
}

fn random_suffix() -> String {
    let n: u32 = rand::random();
    format!("{:06x}", n & 0xff_ffff)
}

impl Tasks {
    async fn wait_applied(&self, revision: Revision) -> bool {
        let mut rx = self.inner.reconciled.clone();
        tokio::time::timeout(ATTACH_DEADLINE, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts a task: see the [module docs](super). Nothing is left behind
    /// on error.
    pub async fn create(&self, spec: TaskSpec) -> Result<Task, OpError> {
        let (task, ipam, applied) = self.prepare(spec).await?;
        // Without the lock: creates wait for the datapath side by side.
        let attached = self.wait_applied(applied).await;
        let _guard = self.inner.ops.lock().await;
        self.pending().remove(&task.name);
        if !attached {
            self.detach(&task).await;
            let _ = ipam.release(self.inner.store.as_ref(), task.ip).await;
            return Err(OpError::Internal(format!(
                "this node did not attach task `{}` within {ATTACH_DEADLINE:?}; see the agent's log",
                task.name
            )));
        }
        let name = task.name.clone();
        self.lock().insert(name.clone(), task.clone());
        if let Err(e) = self.persist() {
            // A task the record lacks would be a stranger to the next agent.
            self.lock().remove(&name);
            self.detach(&task).await;
            let _ = ipam.release(self.inner.store.as_ref(), task.ip).await;
            return Err(OpError::Internal(format!(
                "cannot record task `{name}` in tasks.json: {e}"
            )));
        }
        if task.slot.is_none() {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PID_DEADLINE).await;
                if me.get(&name).is_some_and(|t| t.pid.is_none()) {
                    tracing::warn!(task = %name, "no process was started for this task; removing it");
                    me.remove(&name, Ending::Exited).await;
                }
            });
        }
        Ok(task)
    }

    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The checks, the name reserved, the address, and [`Tasks::attach`];
    /// returns the task, its IPAM and the revision the datapath must reach.
    async fn prepare(&self, spec: TaskSpec) -> Result<(Task, Ipam, Revision), OpError> {
        let _guard = self.inner.ops.lock().await;
        let store = self.inner.store.as_ref();
        let invalid = |field: &str, message: String| OpError::Invalid {
            field: field.to_string(),
            message,
        };
        let (net, _, _) = read_json::<Network>(store, &keys::network(&spec.network))
            .await?
            .ok_or_else(|| OpError::NotFound {
                kind: "network",
                name: spec.network.clone(),
            })?;
        if net.encrypted {
            return Err(invalid(
                "network",
                format!("network `{}` is encrypted; netd does not attach tasks to encrypted networks yet", net.name),
            ));
        }
        if let Some(svc) = &spec.service {
            let (s, _, _) = read_json::<Service>(store, &keys::service(svc))
                .await?
                .ok_or_else(|| OpError::NotFound {
                    kind: "service",
                    name: svc.clone(),
                })?;
            if !s.networks.contains_key(&net.name) {
                return Err(invalid(
                    "network",
                    format!("service `{svc}` is not on network `{}`", net.name),
                ));
            }
        }
        let name = match &spec.name {
            Some(n) if valid_name(n) => n.clone(),
            Some(n) => {
                return Err(invalid(
                    "name",
                    format!("`{n}` is not a valid task name (1-63 of A-Z a-z 0-9 _ . -, not starting with . or -)"),
                ))
            }
            None => format!(
                "{}.{}",
                spec.service.as_deref().unwrap_or("task"),
                random_suffix()
            ),
        };
        if self.lock().contains_key(&name) || !self.pending().insert(name.clone()) {
            return Err(OpError::Conflict {
                field: "name".into(),
                message: format!("a task named `{name}` already runs on this node"),
            });
        }
        let weight = spec.weight.unwrap_or(1);
        let ipam = Ipam {
            network: net.name.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            node: self.inner.node.clone(),
        };
        let ip = match ipam.allocate(store, &name).await {
            Ok(ip) => ip,
            Err(e) => {
                self.pending().remove(&name);
                return Err(match e {
                    crate::ipam::IpamError::Store(s) => OpError::from(s),
                    other => OpError::Conflict {
                        field: "network".into(),
                        message: other.to_string(),
                    },
                });
            }
        };
        let mut task = Task {
            name: name.clone(),
            network: net.name.clone(),
            service: spec.service.clone(),
            ip,
            gateway: net.gateway,
            netns: netns_name(&self.inner.node, &name),
            resolv_conf: PathBuf::new(),
            weight,
            pid: None,
            start_time: None,
            slot: spec.slot,
            command: Vec::new(),
        };
        match self.attach(&mut task).await {
            Ok(applied) => Ok((task, ipam, applied)),
            Err(e) => {
                self.detach(&task).await;
                let _ = ipam.release(store, ip).await;
                self.pending().remove(&name);
                Err(e)
            }
        }
    }

    /// Namespace, resolv.conf, container entry and endpoint; returns the
    /// revision the datapath must apply to have attached the task. On
    /// error the caller runs [`Tasks::detach`].
    async fn attach(&self, task: &mut Task) -> Result<Revision, OpError> {
        let internal = |what: &str, e: String| OpError::Internal(format!("{what}: {e}"));
        let ns = task.netns.clone();
        tokio::task::spawn_blocking(move || ContainerNs::create(&ns).map(|_| ()))
            .await
            .map_err(|e| internal("create the task's namespace", e.to_string()))?
            .map_err(|e| internal("create the task's namespace", e.to_string()))?;
        let dir = self.inner.dir.join("tasks").join(&task.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| internal(&format!("create {}", dir.display()), e.to_string()))?;
        task.resolv_conf = container::write_resolv_conf(&dir, task.gateway, &[])
            .map_err(|e| internal("write resolv.conf", e.to_string()))?;
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (task.network.clone(), task.name.clone()),
                task.netns.clone(),
            );
        let ep = Endpoint {
            name: task.name.clone(),
            network: task.network.clone(),
            service: task.service.clone(),
            node: self.inner.node.clone(),
            ip: task.ip,
            weight: task.weight,
            // A container outside any service has no check to pass.
            state: if task.service.is_some() {
                EndpointState::Starting
            } else {
                EndpointState::Healthy
            },
        };
        let store = self.inner.store.as_ref();
        if !self.inner.owned.claim_endpoint(store, ep).await? {
            return Err(OpError::Conflict {
                field: "name".into(),
                message: format!(
                    "an endpoint named `{}` already exists in network `{}`",
                    task.name, task.network
                ),
            });
        }
        let (_, rev) = store
            .range(&keys::endpoint(&task.network, &task.name))
            .await?;
        Ok(rev)
    }

    /// Undoes [`Tasks::attach`]: endpoint, attachment, namespace, files.
    pub(super) async fn detach(&self, task: &Task) {
        let store = self.inner.store.as_ref();
        // Only an endpoint this node owns (a lost name race must not delete
        // the winner's).
        if self
            .inner
            .owned
            .endpoint(&task.network, &task.name)
            .is_some()
        {
            if let Err(e) = self
                .inner
                .owned
                .remove_endpoint(store, &task.network, &task.name)
                .await
            {
                tracing::warn!(task = %task.name, error = %e, "cannot delete the task's endpoint now; it ends with this node's lease");
            }
        }
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(task.network.clone(), task.name.clone()));
        // The datapath detaches the veth on the next reconcile; wait for it
        // so the namespace goes away empty.
        if let Ok((_, rev)) = store
            .range(&keys::endpoint(&task.network, &task.name))
            .await
        {
            self.wait_applied(rev).await;
        }
        let ns = task.netns.clone();
        let _ = tokio::task::spawn_blocking(move || ContainerNs::remove(&ns)).await;
        let _ = std::fs::remove_dir_all(self.inner.dir.join("tasks").join(&task.name));
    }
}
