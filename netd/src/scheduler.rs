//! Replicas netd runs itself: a service with `replicas = N` and a
//! `command` has slots 1..=N, and each slot is run by exactly one live node.
//!
//! No single writer: a node claims a slot by creating `task/<service>/<slot>`
//! (compare-and-swap on an absent key) on its own lease. The node to claim
//! a free slot is the least loaded live node, ties broken by a rendezvous
//! hash of (service, slot, node), so nodes agree without talking; if that
//! node has not claimed it after [`CLAIM_GRACE`], any node may (and a node
//! already running the slot's replica claims it at once). When a node dies
//! its lease ends, its claims vanish and the others take its slots over; a
//! node that takes a new lease (an agent restart, the store away too long)
//! moves its claims onto it before the old one ends.
//!
//! A claimed slot's replica is the task `<service>.<slot>`, attached to the
//! service's first network, its output appended to `<logs>/<task>.log`. A
//! replica that exits is restarted under the same name: at once after a
//! run of at least [`STABLE_RUN`], otherwise after a delay doubling from
//! [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`]. When the service's command
//! changes, the replicas are replaced one at a time across the cluster,
//! each once the one before is healthy (`update`: a lock per service).
//!
//! Slots past `replicas` (a scale down) or of a removed service are
//! drained (acknowledged by every node, see [`crate::tasks`]) and stopped,
//! then released; so is a replica whose slot another node holds. Starts
//! and stops run beside the scheduler, so a pass is short: a node with
//! many replicas to start still claims its share of free slots at once,
//! and one slow drain holds up nothing else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::container;
use crate::liveness::Owned;
use crate::model::{Service, Snapshot};
use crate::store::{LeaseId, Revision, Store, StoreError};
use crate::tasks::{Ending, Task, TaskSpec, Tasks};

/// How long a free slot waits for its preferred node before any node may
/// claim it.
pub const CLAIM_GRACE: Duration = Duration::from_secs(3);
/// The wait before restarting a replica that exited soon after its start;
/// it doubles with every such exit in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait before restarting a replica that keeps exiting.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A replica that ran this long before exiting is restarted at once, and
/// its backoff starts over.
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// How often the scheduler looks again without a change.
pub const TICK: Duration = Duration::from_secs(1);

fn claim_key(service: &str, slot: u32) -> String {
    format!("task/{service}/{slot}")
}

/// The task name of a slot.
pub fn task_name(service: &str, slot: u32) -> String {
    format!("{service}.{slot}")
}

fn rendezvous(service: &str, slot: u32, node: &str) -> u64 {
    // FNV-1a over the three parts; stable across nodes and versions.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in service
        .bytes()
        .chain([0])
        .chain(slot.to_be_bytes())
        .chain([0])
        .chain(node.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Which live node should run a free slot: the least loaded, ties broken
/// by the rendezvous hash.
pub fn preferred<'a>(
    service: &str,
    slot: u32,
    live: impl Iterator<Item = &'a str>,
    load: &HashMap<String, usize>,
) -> Option<&'a str> {
    live.min_by_key(|n| {
        (
            load.get(*n).copied().unwrap_or(0),
            u64::MAX - rendezvous(service, slot, n),
        )
    })
}

/// The wait before the next start of a replica that exited after `fails`
/// short runs in a row (0: it ran long enough, start at once).
pub fn backoff(fails: u32) -> Duration {
    match fails {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(MAX_BACKOFF),
    }
}

fn runnable(s: &Service) -> bool {
    s.replicas > 0 && !s.command.is_empty()
}

/// A slot: (service, slot number).
type Slot = (String, u32);

/// A claim as read from the store.
#[derive(Debug, Clone)]
struct Claim {
    node: String,
    rev: Revision,
    lease: LeaseId,
}

/// The runs of one slot on this node, for restart backoff.
#[derive(Debug, Clone, Copy)]
struct Runs {
    /// When the last replica was started.
    started: Instant,
    /// Short runs in a row.
    fails: u32,
    /// Once the last replica is seen gone: when the next may start.
    retry_at: Option<Instant>,
}

impl Runs {
    /// Notes that the replica was seen gone at `now`; returns when the next
    /// may start.
    fn ended(&mut self, now: Instant) -> Instant {
        let ran = now - self.started;
        self.fails = if ran >= STABLE_RUN { 0 } else { self.fails + 1 };
        let at = now + backoff(self.fails);
        self.retry_at = Some(at);
        at
    }
}

/// The scheduler of one node.
pub struct Scheduler {
    store: Arc<dyn Store>,
    owned: Arc<Owned>,
    tasks: Tasks,
    exe: PathBuf,
    logs: PathBuf,
    runs: HashMap<Slot, Runs>,
    /// When each free slot was first seen free.
    free_since: HashMap<Slot, Instant>,
    /// Replicas being drained and stopped, by task name.
    stopping: Arc<Mutex<BTreeSet<String>>>,
    /// Replicas being started, by task name.
    starting: Arc<Mutex<BTreeSet<String>>>,
}

impl Scheduler {
    /// A scheduler starting replicas with `exe __enter …` (the netd
    /// binary), logging each replica's output under `logs`.
    pub fn new(
        store: Arc<dyn Store>,
        owned: Arc<Owned>,
        tasks: Tasks,
        exe: PathBuf,
        logs: PathBuf,
    ) -> Scheduler {
        Scheduler {
            store,
            owned,
            tasks,
            exe,
            logs,
            runs: HashMap::new(),
            free_since: HashMap::new(),
            stopping: Arc::default(),
            starting: Arc::default(),
        }
    }

    /// Runs until `stop` turns true, looking at every applied snapshot (and
    /// again after [`TICK`], or sooner when a restart is due).
    pub async fn run(
        mut self,
        mut applied: watch::Receiver<Arc<Snapshot>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let snap = applied.borrow_and_update().clone();
            let mut wake = Instant::now() + TICK;
            if snap.revision > 0 {
                match self.pass(&snap).await {
                    Ok(Some(at)) => wake = wake.min(at),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "scheduling pass failed; retrying"),
                }
            }
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn is_starting(&self, name: &str) -> bool {
        self.starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    fn is_stopping(&self, name: &str) -> bool {
        self.stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Every `task/` claim.
    async fn claims(&self) -> Result<BTreeMap<Slot, Claim>, StoreError> {
        let (entries, _) = self.store.range("task/").await?;
        let mut claims = BTreeMap::new();
        for e in entries {
            let Some((svc, slot)) = e.key.strip_prefix("task/").and_then(|r| r.rsplit_once('/'))
            else {
                continue;
            };
            let Ok(slot) = slot.parse() else { continue };
            let claim = Claim {
                node: String::from_utf8_lossy(&e.value).into_owned(),
                rev: e.mod_revision,
                lease: e.lease,
            };
            claims.insert((svc.to_string(), slot), claim);
        }
        Ok(claims)
    }

    /// One look at the snapshot; returns when the next restart is due.
    async fn pass(&mut self, snap: &Snapshot) -> Result<Option<Instant>, StoreError> {
        let me = self.owned.node().name;
        let lease = self.owned.lease();
        let mut claims = self.claims().await?;

        // Our claims go onto the lease in force, so they outlive the old one.
        let mut moved = false;
        for (slot, c) in claims.iter().filter(|(_, c)| c.node == me) {
            if lease != 0 && c.lease != lease {
                let key = claim_key(&slot.0, slot.1);
                moved |= self
                    .store
                    .put_if(&key, c.rev, me.clone().into_bytes(), lease)
                    .await?;
            }
        }
        if moved {
            claims = self.claims().await?;
        }
        let mut load: HashMap<String, usize> = HashMap::new();
        for c in claims.values() {
            *load.entry(c.node.clone()).or_default() += 1;
        }
        let local: BTreeMap<Slot, Task> = self
            .tasks
            .list()
            .into_iter()
            .filter_map(|t| Some(((t.service.clone()?, t.slot?), t)))
            .collect();

        self.claim_free(snap, &me, lease, &local, &mut claims, &mut load)
            .await?;

        // Local replicas: stop those of slots another node holds or nobody
        // wants (an unclaimed wanted slot is claimed once this node can).
        for (slot, task) in &local {
            if self.is_stopping(&task.name) || self.is_starting(&task.name) {
                continue;
            }
            match claims.get(slot) {
                Some(c) if c.node != me => {
                    tracing::info!(task = %task.name, holder = %c.node, "another node holds the slot; stopping the local replica");
                    self.stop(task.name.clone(), None);
                }
                _ if wanted(snap, slot) => {}
                claim => {
                    tracing::info!(task = %task.name, "slot no longer wanted; draining the replica");
                    let release = claim.map(|c| (claim_key(&slot.0, slot.1), c.rev));
                    self.stop(task.name.clone(), release);
                }
            }
        }

        // Our claims: release the unwanted, run the others.
        let mut next: Option<Instant> = None;
        let now = Instant::now();
        for (slot, c) in claims.iter().filter(|(_, c)| c.node == me) {
            let name = task_name(&slot.0, slot.1);
            if local.contains_key(slot) || self.is_stopping(&name) || self.is_starting(&name) {
                continue;
            }
            let Some(svc) = snap.services.get(&slot.0).filter(|_| wanted(snap, slot)) else {
                self.store
                    .delete_if(&claim_key(&slot.0, slot.1), c.rev)
                    .await?;
                self.runs.remove(slot);
                continue;
            };
            match self.due(slot, now) {
                Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
                _ => self.start(svc, slot.1, &name),
            }
        }
        self.runs
            .retain(|slot, _| claims.get(slot).is_some_and(|c| c.node == me));

        self.replace_outdated(snap, &me, &claims, &local).await?;
        Ok(next)
    }

    /// Claims the free slots this node should run.
    async fn claim_free(
        &mut self,
        snap: &Snapshot,
        me: &str,
        lease: LeaseId,
        local: &BTreeMap<Slot, Task>,
        claims: &mut BTreeMap<Slot, Claim>,
        load: &mut HashMap<String, usize>,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut seen_free = BTreeSet::new();
        for svc in snap.services.values().filter(|s| runnable(s)) {
            for n in 1..=svc.replicas {
                let slot = (svc.name.clone(), n);
                if claims.contains_key(&slot) {
                    // Held (a dead node's claim goes with its lease).
                    continue;
                }
                seen_free.insert(slot.clone());
                let since = *self.free_since.entry(slot.clone()).or_insert(now);
                let pick = preferred(&svc.name, n, snap.nodes.keys().map(String::as_str), load);
                let runs_here = local.contains_key(&slot);
                if !runs_here && pick != Some(me) && now - since < CLAIM_GRACE {
                    continue;
                }
                if lease == 0 {
                    continue;
                }
                let key = claim_key(&svc.name, n);
                if self
                    .store
                    .put_if(&key, 0, me.as_bytes().to_vec(), lease)
                    .await?
                {
                    tracing::info!(service = %svc.name, slot = n, "claimed a replica slot");
                    let rev = self
                        .store
                        .range(&key)
                        .await?
                        .0
                        .into_iter()
                        .find(|e| e.key == key)
                        .map_or(0, |e| e.mod_revision);
                    let claim = Claim {
                        node: me.to_string(),
                        rev,
                        lease,
                    };
                    claims.insert(slot, claim);
                    *load.entry(me.to_string()).or_default() += 1;
                }
            }
        }
        self.free_since.retain(|k, _| seen_free.contains(k));
        Ok(())
    }

    /// When the slot's replica may start (next to the backoff), noting a
    /// replica seen gone for the first time.
    fn due(&mut self, slot: &Slot, now: Instant) -> Option<Instant> {
        let r = self.runs.get_mut(slot)?;
        if r.retry_at.is_none() {
            let at = r.ended(now);
            if r.fails > 0 {
                tracing::info!(service = %slot.0, slot = slot.1, ran = ?(now - r.started), restart_in = ?(at - now), "replica ended soon after its start; backing off");
            }
        }
        r.retry_at
    }

    /// Drains and stops replica `name` beside the scheduler, then releases
    /// `claim` (key, revision) if given.
    fn stop(&self, name: String, claim: Option<(String, Revision)>) {
        if !self
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone())
        {
            return;
        }
        let tasks = self.tasks.clone();
        let store = Arc::clone(&self.store);
        let stopping = Arc::clone(&self.stopping);
        tokio::spawn(async move {
            tasks.remove(&name, Ending::Stop).await;
            if let Some((key, rev)) = claim {
                // A claim moved meanwhile is released by a later pass.
                if let Err(e) = store.delete_if(&key, rev).await {
                    tracing::warn!(%key, error = %e, "cannot release a replica slot now; a later pass will");
                }
            }
            stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        });
    }

    /// Starts slot `slot`'s replica `name` beside the scheduler.
    fn start(&mut self, svc: &Service, slot: u32, name: &str) {
        let key = (svc.name.clone(), slot);
        let fails = self.runs.get(&key).map_or(0, |r| r.fails);
        self.runs.insert(
            key,
            Runs {
                started: Instant::now(),
                fails,
                retry_at: None,
            },
        );
        let Some(network) = svc.networks.keys().next() else {
            return;
        };
        if !self
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string())
        {
            return;
        }
        let spec = TaskSpec {
            network: network.clone(),
            service: Some(svc.name.clone()),
            name: Some(name.to_string()),
            weight: None,
            slot: Some(slot),
        };
        let tasks = self.tasks.clone();
        let (exe, logs) = (self.exe.clone(), self.logs.clone());
        let command = svc.command.clone();
        let starting = Arc::clone(&self.starting);
        let name = name.to_string();
        tokio::spawn(async move {
            run_replica(&tasks, &exe, &logs, spec, command).await;
            starting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        });
    }
}

/// Creates the task of `spec` (named) and starts `command` in it with
/// `exe __enter …`, its output appended to `<logs>/<task>.log`.
async fn run_replica(
    tasks: &Tasks,
    exe: &std::path::Path,
    logs: &std::path::Path,
    spec: TaskSpec,
    command: Vec<String>,
) {
    let name = spec.name.clone().unwrap_or_default();
    let name = name.as_str();
    let task = match tasks.create(spec).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(task = %name, error = %e, "cannot start the replica");
            return;
        }
    };
    let log = logs.join(format!("{name}.log"));
    let out = std::fs::create_dir_all(logs).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
    });
    let mut cmd = container::command_in(exe, &task.netns, &task.resolv_conf, Some(name), &command);
    match out.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((o, e)) => {
            cmd.stdout(Stdio::from(o)).stderr(Stdio::from(e));
        }
        Err(e) => {
            tracing::warn!(file = %log.display(), error = %e, "cannot open the replica's log");
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.stdin(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(task = %name, error = %e, "cannot start the replica's process");
            tasks.remove(name, Ending::Exited).await;
            return;
        }
    };
    let Some(pid) = child.id() else {
        tasks.remove(name, Ending::Exited).await;
        return;
    };
    match tasks.set_replica_pid(name, pid, command).await {
        Ok(_) => tracing::info!(task = %name, pid, "replica started"),
        Err(e) => {
            tracing::warn!(task = %name, error = %e, "cannot record the replica's process; stopping it");
            let _ = child.start_kill();
            tasks.remove(name, Ending::Exited).await;
        }
    }
    // Reap it when it exits (the task's own watch ends the task).
    let name = name.to_string();
    tokio::spawn(async move {
        match child.wait().await {
            Ok(s) if !s.success() => {
                tracing::info!(task = %name, pid, status = %s, "replica's process ended")
            }
            _ => {}
        }
    });
}

/// Whether `slot` is one its service still asks for.
fn wanted(snap: &Snapshot, slot: &Slot) -> bool {
    snap.services
        .get(&slot.0)
        .is_some_and(|s| runnable(s) && slot.1 <= s.replicas)
}

mod update;

#[cfg(test)]
mod tests;
