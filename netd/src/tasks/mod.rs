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
//!    (starting), and a wait until this node's datapath has attached it
//!    (creates wait side by side: one reconcile attaches them all).
//! 2. [`Tasks::set_pid`]: the process is watched (pidfd); its exit ends the
//!    task. A task whose pid never arrives ends after [`PID_DEADLINE`].
//! 3. [`Tasks::remove`]: a task whose process still runs is first marked
//!    draining; it is stopped only once every live node has acknowledged
//!    (no new traffic, and nothing of its own in flight to it: see
//!    `agent::IN_FLIGHT_GRACE`; no fixed sleep), or after [`ACK_DEADLINE`]. Then whatever the
//!    process left running in the namespace is killed (as in a container,
//!    the task ends with its main process), and the endpoint, the
//!    attachment, the namespace and the address go, in that order.
//!
//! Tasks are recorded in `<state-dir>/tasks.json`, so a restarted agent
//! takes back the ones whose process still runs (same pid, same start
//! time) without touching their namespaces, and cleans up the others.
//!
//! # Layout
//! - `mod.rs` (here): the task types and the registry ([`Tasks`]).
//! - `create`: step 1, creating a task, and undoing its attachment.
//! - `process`: step 2, the task's process watched; what it leaves killed.
//! - `remove`: step 3, ending a task: drain (acknowledgements), stop, clean up.
//! - `restore`: `tasks.json`, and the tasks an earlier agent left taken back.
//! - `sweep`: addresses and namespaces a create cut short by a crash left.

mod create;
mod process;
mod remove;
mod restore;
mod sweep;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::Containers;
use crate::liveness::Owned;
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
    /// Names of tasks being created (reserved until the datapath has
    /// attached them, or they failed).
    pending: Mutex<std::collections::BTreeSet<String>>,
    /// Serialises writes of `tasks.json`, so the last written holds the
    /// latest registry (creates and pids are recorded side by side).
    recording: Mutex<()>,
    /// Serialises the store and kernel steps of creates and removes (each
    /// is short; they must not interleave for one name). A create does not
    /// hold it while it waits for the datapath, so one reconcile can
    /// attach many new tasks.
    ops: tokio::sync::Mutex<()>,
}

/// The tasks an earlier agent recorded ([`Tasks::load`]).
#[derive(Debug, Default)]
pub struct Recorded {
    /// By name.
    pub tasks: BTreeMap<String, Task>,
    /// Whether the record was read whole (or there was none): only then
    /// may what no recorded task names be removed as a crash's leftover.
    pub whole: bool,
}

/// This node's tasks (cheap to clone).
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
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
                pending: Mutex::default(),
                recording: Mutex::new(()),
                ops: tokio::sync::Mutex::new(()),
            }),
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
}

/// The container map implied by recorded tasks.
pub fn containers_of(tasks: &BTreeMap<String, Task>) -> BTreeMap<(String, String), String> {
    tasks
        .values()
        .map(|t| ((t.network.clone(), t.name.clone()), t.netns.clone()))
        .collect()
}
