//! This node's tasks: a container namespace attached to one network, an
//! address from this node's IPAM blocks, an endpoint in the store on this
//! node's lease, and a process watched until it exits.
//!
//! Two kinds: tasks started by `netd run` (the client runs the process and
//! tells the agent its pid), and replicas netd runs itself for a service
//! with `replicas` and a `command` ([`crate::scheduler`]).
//!
//! Life of a task:
//! 1. [`Tasks::create`]: namespace, address, resolv.conf, endpoint
//!    (starting), and a wait until this node's datapath has attached it.
//! 2. [`Tasks::set_pid`]: the process is watched (pidfd); its exit ends the
//!    task. A task whose pid never arrives ends after [`PID_DEADLINE`].
//! 3. [`Tasks::remove`]: a task whose process still runs is first marked
//!    draining; it is stopped only once every live node has acknowledged
//!    (no fixed sleep), or after [`ACK_DEADLINE`]. Then whatever the
//!    process left running in the namespace is killed (as in a container,
//!    the task ends with its main process), and the endpoint, the
//!    attachment, the namespace and the address go, in that order.
//!
//! Tasks are recorded in `<state-dir>/tasks.json`, so a restarted agent
//! takes back the ones whose process still runs (same pid, same start
//! time) without touching their namespaces, and cleans up the others.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::Containers;
use crate::container::{self, ContainerNs};
use crate::ipam::Ipam;
use crate::liveness::Owned;
use crate::model::{keys, valid_name, Endpoint, EndpointState, Network, Service};
use crate::ops::OpError;
use crate::store::{Revision, Store, StoreError};

/// How long a created task waits for its process id.
pub const PID_DEADLINE: Duration = Duration::from_secs(30);
/// The longest a draining task waits for other nodes' acknowledgements.
pub const ACK_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stopping process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long creating a task waits for the datapath to attach it.
pub const ATTACH_DEADLINE: Duration = Duration::from_secs(20);

/// A task to start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The network to attach to.
    pub network: String,
    /// The service it is a replica of.
    #[serde(default)]
    pub service: Option<String>,
    /// Its name (the task name in DNS); default `<service>.<hex>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Its weight in balancing (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// The replica slot netd runs it for (scheduler only).
    #[serde(default)]
    pub slot: Option<u32>,
}

/// A task of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its name.
    pub name: String,
    /// Its network.
    pub network: String,
    /// Its service.
    pub service: Option<String>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The network's gateway (its DNS server).
    pub gateway: Ipv4Addr,
    /// Its container namespace (under /run/netns).
    pub netns: String,
    /// The resolv.conf to mount over /etc/resolv.conf in it.
    pub resolv_conf: PathBuf,
    /// Its weight.
    pub weight: u32,
    /// Its process, once known.
    pub pid: Option<u32>,
    /// The process's start time (clock ticks after boot), to tell it from
    /// a later process that got the same pid.
    pub start_time: Option<u64>,
    /// The replica slot, for replicas netd runs itself.
    pub slot: Option<u32>,
    /// The command a replica netd runs itself was started with (empty for
    /// other tasks, and for replicas recorded before netd kept it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// Why a task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its process exited: nothing left to drain.
    Exited,
    /// It is being stopped: drain first, then stop the process.
    Stop,
}

struct Inner {
    store: Arc<dyn Store>,
    owned: Arc<Owned>,
    containers: Containers,
    reconciled: watch::Receiver<Revision>,
    node: String,
    dir: PathBuf,
    tasks: Mutex<BTreeMap<String, Task>>,
    /// Serialises creates and removes (each is short; the store and kernel
    /// steps inside must not interleave for one name).
    ops: tokio::sync::Mutex<()>,
}

/// This node's tasks (cheap to clone).
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

fn netns_name(node: &str, task: &str) -> String {
    format!("shoal-t.{node}.{task}")
}

fn random_suffix() -> String {
    let n: u32 = rand::random();
    format!("{:06x}", n & 0xff_ffff)
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Revision, i64)>, StoreError> {
    let (entries, _) = store.range(key).await?;
    Ok(entries.into_iter().find(|e| e.key == key).and_then(|e| {
        Some((
            serde_json::from_slice(&e.value).ok()?,
            e.mod_revision,
            e.lease,
        ))
    }))
}

impl Tasks {
    /// The task registry of `node`, persisted under `dir`.
    pub fn new(
        store: Arc<dyn Store>,
        owned: Arc<Owned>,
        containers: Containers,
        reconciled: watch::Receiver<Revision>,
        dir: &Path,
    ) -> Tasks {
        let node = owned.node().name;
        Tasks {
            inner: Arc::new(Inner {
                store,
                owned,
                containers,
                reconciled,
                node,
                dir: dir.to_path_buf(),
                tasks: Mutex::new(BTreeMap::new()),
                ops: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The tasks recorded under `dir` by an earlier agent, and the
    /// container map they imply (for the agent's first reconcile).
    pub fn load(dir: &Path) -> BTreeMap<String, Task> {
        let path = dir.join("tasks.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "tasks file unreadable; starting with none");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Every task, by name.
    pub fn list(&self) -> Vec<Task> {
        self.lock().values().cloned().collect()
    }

    /// One task.
    pub fn get(&self, name: &str) -> Option<Task> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Task>> {
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self) {
        let tasks = self.lock().clone();
        let path = self.inner.dir.join("tasks.json");
        let tmp = self.inner.dir.join("tasks.json.tmp");
        let body = serde_json::to_vec_pretty(&tasks).unwrap_or_default();
        let result = std::fs::create_dir_all(&self.inner.dir)
            .and_then(|_| std::fs::write(&tmp, body))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::error!(file = %path.display(), error = %e, "cannot record tasks");
        }
    }

    async fn wait_applied(&self, revision: Revision) -> bool {
        let mut rx = self.inner.reconciled.clone();
        tokio::time::timeout(ATTACH_DEADLINE, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts a task: see the module docs. Nothing is left behind on error.
    pub async fn create(&self, spec: TaskSpec) -> Result<Task, OpError> {
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
        if self.lock().contains_key(&name) {
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
        let ip = ipam.allocate(store, &name).await.map_err(|e| match e {
            crate::ipam::IpamError::Store(s) => OpError::from(s),
            other => OpError::Conflict {
                field: "network".into(),
                message: other.to_string(),
            },
        })?;
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
            Ok(()) => {
                self.lock().insert(name.clone(), task.clone());
                self.persist();
                if spec.slot.is_none() {
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
            Err(e) => {
                self.detach(&task).await;
                let _ = ipam.release(store, ip).await;
                Err(e)
            }
        }
    }

    /// Namespace, resolv.conf, container entry, endpoint, and the wait for
    /// the datapath. On error the caller runs [`Tasks::detach`].
    async fn attach(&self, task: &mut Task) -> Result<(), OpError> {
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
        if !self.wait_applied(rev).await {
            return Err(OpError::Internal(format!(
                "this node did not attach task `{}` within {ATTACH_DEADLINE:?}; see the agent's log",
                task.name
            )));
        }
        Ok(())
    }

    /// Undoes [`Tasks::attach`]: endpoint, attachment, namespace, files.
    async fn detach(&self, task: &Task) {
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

    /// Records the task's process and ends the task when it exits.
    pub async fn set_pid(&self, name: &str, pid: u32) -> Result<Task, OpError> {
        self.set_process(name, pid, Vec::new())
    }

    /// [`Tasks::set_pid`] for a replica netd runs itself, with the command
    /// it runs (a change of the service's command replaces the replica).
    pub async fn set_replica_pid(
        &self,
        name: &str,
        pid: u32,
        command: Vec<String>,
    ) -> Result<Task, OpError> {
        self.set_process(name, pid, command)
    }

    fn set_process(&self, name: &str, pid: u32, command: Vec<String>) -> Result<Task, OpError> {
        let task = {
            let mut tasks = self.lock();
            let t = tasks.get_mut(name).ok_or_else(|| OpError::NotFound {
                kind: "task",
                name: name.to_string(),
            })?;
            if t.pid.is_some() {
                return Err(OpError::Conflict {
                    field: "pid".into(),
                    message: format!("task `{name}` already has a process"),
                });
            }
            t.pid = Some(pid);
            t.start_time = container::start_time(pid);
            t.command = command;
            t.clone()
        };
        self.persist();
        self.watch(task.clone());
        Ok(task)
    }

    fn watch(&self, task: Task) {
        let Some(pid) = task.pid else { return };
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = container::wait_exit(pid).await {
                tracing::warn!(task = %task.name, pid, error = %e, "cannot watch the task's process; polling");
                while container::alive(pid) && container::start_time(pid) == task.start_time {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            // Still the same task (not removed and re-created meanwhile)?
            if me.get(&task.name).is_some_and(|t| t.pid == Some(pid)) {
                tracing::info!(task = %task.name, pid, "the task's process exited");
                me.remove(&task.name, Ending::Exited).await;
            }
        });
    }

    /// Ends a task (see the module docs); false if there was none.
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
        self.persist();
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

    /// Takes back the tasks an earlier agent recorded: those whose process
    /// still runs are adopted as they are (their endpoint keeps its state);
    /// the others are cleaned up.
    pub async fn restore(&self, recorded: BTreeMap<String, Task>) {
        let store = self.inner.store.as_ref();
        for (name, task) in recorded {
            let running = task.pid.is_some_and(|p| {
                container::alive(p) && container::start_time(p) == task.start_time
            });
            self.lock().insert(name.clone(), task.clone());
            let key = keys::endpoint(&task.network, &name);
            let stored = match read_json::<Endpoint>(store, &key).await {
                Ok(Some((e, _, _))) if e.node == self.inner.node => Some(e),
                _ => None,
            };
            if !running {
                tracing::info!(task = %name, "the task's process is gone; cleaning up");
                if let Some(e) = stored {
                    self.inner.owned.note_state(&e.network, &e.name, e.state);
                    let _ = self.inner.owned.set_endpoint(store, e).await;
                }
                self.remove(&name, Ending::Exited).await;
                continue;
            }
            let state = stored.map_or(EndpointState::Starting, |e| e.state);
            let ep = Endpoint {
                name: name.clone(),
                network: task.network.clone(),
                service: task.service.clone(),
                node: self.inner.node.clone(),
                ip: task.ip,
                weight: task.weight,
                state,
            };
            if let Err(e) = self.inner.owned.set_endpoint(store, ep).await {
                tracing::warn!(task = %name, error = %e, "cannot re-assert the task's endpoint now; the lease loop will");
            }
            tracing::info!(task = %name, pid = ?task.pid, "task taken back");
            self.watch(task);
        }
        self.persist();
    }
}

/// Kills (SIGKILL) every process inside namespace `netns` (a name under
/// /run/netns), matched by its network namespace as `ip netns pids` does;
/// returns how many. Each is signalled through a pidfd opened before the
/// match is checked again, so a pid recycled meanwhile is never hit.
fn kill_leftovers(netns: &str) -> usize {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(Path::new(shoal_overlay::netns::NETNS_DIR).join(netns)) else {
        return 0;
    };
    let inside = |pid: i32| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| (m.dev(), m.ino()) == (ns.dev(), ns.ino()))
    };
    let me = std::process::id() as i32;
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in proc.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || !inside(pid) {
            continue;
        }
        let Some(fd) = Pid::from_raw(pid).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
        else {
            continue;
        };
        if inside(pid) && pidfd_send_signal(&fd, Signal::KILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// The container map implied by recorded tasks.
pub fn containers_of(tasks: &BTreeMap<String, Task>) -> BTreeMap<(String, String), String> {
    tasks
        .values()
        .map(|t| ((t.network.clone(), t.name.clone()), t.netns.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// Deletes the namespace and kills the children on drop.
    struct Guard(String, Vec<Child>);

    impl Drop for Guard {
        fn drop(&mut self) {
            for c in &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = ContainerNs::remove(&self.0);
        }
    }

    #[test]
    fn what_a_task_leaves_in_its_namespace_is_killed_and_nothing_else() {
        let ns = format!("shoal-unit-{}-leftovers", std::process::id());
        ContainerNs::create(&ns).unwrap();
        let mut g = Guard(ns.clone(), Vec::new());
        let spawn = |args: &[&str]| Command::new(args[0]).args(&args[1..]).spawn().unwrap();
        g.1.push(spawn(&["ip", "netns", "exec", &ns, "sleep", "30"]));
        g.1.push(spawn(&["ip", "netns", "exec", &ns, "sleep", "30"]));
        g.1.push(spawn(&["sleep", "30"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pids = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&pids.stdout)
                .split_whitespace()
                .count()
                == 2
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the sleeps never entered {ns}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(kill_leftovers(&ns), 2);
        for c in &mut g.1[..2] {
            let status = c.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
        }
        assert!(
            g.1[2].try_wait().unwrap().is_none(),
            "a process outside was hit"
        );
        assert_eq!(kill_leftovers(&ns), 0);
        assert_eq!(kill_leftovers("shoal-unit-no-such-namespace"), 0);
    }
}
