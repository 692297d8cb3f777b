//! Replicas netd runs itself: a service with `replicas = N` and a
//! `command` has slots 1..=N, and each slot is run by exactly one live node.
//!
//! No single writer: a node claims a slot by creating `task/<service>/<slot>`
//! (compare-and-swap on an absent key) on its own lease. The node to claim
//! a free slot is the least loaded live node, ties broken by a rendezvous
//! hash of (service, slot, node), so nodes agree without talking; if that
//! node has not claimed it after [`CLAIM_GRACE`], any node may. When a node
//! dies its lease ends, its claims vanish and the others take its slots
//! over. A claimed slot's replica is the task `<service>.<slot>`, attached
//! to the service's first network, restarted with backoff when it exits.
//! Slots past `replicas` (a scale down) or of a removed service are
//! drained (acknowledged by every node) and stopped, then released.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::container;
use crate::liveness::Owned;
use crate::model::{Service, Snapshot};
use crate::store::Store;
use crate::tasks::{Ending, TaskSpec, Tasks};

/// How long a free slot waits for its preferred node before any node may
/// claim it.
pub const CLAIM_GRACE: Duration = Duration::from_secs(3);
/// The longest wait before restarting a replica that keeps exiting.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
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

fn runnable(s: &Service) -> bool {
    s.replicas > 0 && !s.command.is_empty()
}

/// Per-slot restart bookkeeping of this node.
#[derive(Default)]
struct Restarts {
    /// (service, slot) -> (failures in a row, not before).
    backoff: HashMap<(String, u32), (u32, Instant)>,
    /// When each free slot was first seen free.
    free_since: HashMap<(String, u32), Instant>,
}

/// The scheduler of one node.
pub struct Scheduler {
    store: Arc<dyn Store>,
    owned: Arc<Owned>,
    tasks: Tasks,
    exe: PathBuf,
    logs: PathBuf,
    restarts: Restarts,
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
            restarts: Restarts::default(),
        }
    }

    /// Runs until `stop` turns true, looking at every applied snapshot.
    pub async fn run(
        mut self,
        mut applied: watch::Receiver<Arc<Snapshot>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let snap = applied.borrow_and_update().clone();
            if snap.revision > 0 {
                if let Err(e) = self.pass(&snap).await {
                    tracing::warn!(error = %e, "scheduling pass failed; retrying");
                }
            }
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn pass(&mut self, snap: &Snapshot) -> Result<(), crate::store::StoreError> {
        let me = self.owned.node().name;
        let (entries, _) = self.store.range("task/").await?;
        let mut claims: BTreeMap<(String, u32), String> = BTreeMap::new();
        for e in &entries {
            let Some(rest) = e.key.strip_prefix("task/") else {
                continue;
            };
            let Some((svc, slot)) = rest.rsplit_once('/') else {
                continue;
            };
            let Ok(slot) = slot.parse() else { continue };
            claims.insert(
                (svc.to_string(), slot),
                String::from_utf8_lossy(&e.value).to_string(),
            );
        }
        let mut load: HashMap<String, usize> = HashMap::new();
        for n in claims.values() {
            *load.entry(n.clone()).or_default() += 1;
        }

        // Claim free slots this node should run.
        let now = Instant::now();
        let mut seen_free = BTreeSet::new();
        for svc in snap.services.values().filter(|s| runnable(s)) {
            for slot in 1..=svc.replicas {
                let key = (svc.name.clone(), slot);
                if claims.get(&key).is_some_and(|n| snap.nodes.contains_key(n)) {
                    continue;
                }
                seen_free.insert(key.clone());
                let since = *self.restarts.free_since.entry(key.clone()).or_insert(now);
                let pick = preferred(
                    &svc.name,
                    slot,
                    snap.nodes.keys().map(String::as_str),
                    &load,
                );
                if pick != Some(me.as_str()) && now - since < CLAIM_GRACE {
                    continue;
                }
                let lease = self.owned.lease();
                if lease == 0 {
                    continue;
                }
                let claimed = self
                    .store
                    .put_if(
                        &claim_key(&svc.name, slot),
                        0,
                        me.clone().into_bytes(),
                        lease,
                    )
                    .await?;
                if claimed {
                    tracing::info!(service = %svc.name, slot, "claimed a replica slot");
                    claims.insert(key, me.clone());
                    *load.entry(me.clone()).or_default() += 1;
                }
            }
        }
        self.restarts
            .free_since
            .retain(|k, _| seen_free.contains(k));

        // Run, or stop, the slots this node holds.
        for ((svc_name, slot), node) in &claims {
            if *node != me {
                continue;
            }
            let name = task_name(svc_name, *slot);
            let svc = snap
                .services
                .get(svc_name)
                .filter(|s| runnable(s) && *slot <= s.replicas);
            let Some(svc) = svc else {
                if self.tasks.get(&name).is_some() {
                    tracing::info!(task = %name, "slot no longer wanted; draining the replica");
                    self.tasks.remove(&name, Ending::Stop).await;
                }
                self.store.delete(&claim_key(svc_name, *slot)).await?;
                self.restarts.backoff.remove(&(svc_name.clone(), *slot));
                continue;
            };
            if self.tasks.get(&name).is_some() {
                continue;
            }
            let key = (svc_name.clone(), *slot);
            if self
                .restarts
                .backoff
                .get(&key)
                .is_some_and(|(_, not_before)| now < *not_before)
            {
                continue;
            }
            self.start(svc, *slot, &name).await;
        }
        Ok(())
    }

    async fn start(&mut self, svc: &Service, slot: u32, name: &str) {
        let key = (svc.name.clone(), slot);
        let (fails, _) = self
            .restarts
            .backoff
            .get(&key)
            .copied()
            .unwrap_or((0, Instant::now()));
        let delay = Duration::from_millis(500 * 2u64.pow(fails.min(6))).min(MAX_BACKOFF);
        self.restarts
            .backoff
            .insert(key, (fails + 1, Instant::now() + delay));
        let Some(network) = svc.networks.keys().next() else {
            return;
        };
        let spec = TaskSpec {
            network: network.clone(),
            service: Some(svc.name.clone()),
            name: Some(name.to_string()),
            weight: None,
            slot: Some(slot),
        };
        let task = match self.tasks.create(spec).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(task = %name, error = %e, "cannot start the replica");
                return;
            }
        };
        let log = self.logs.join(format!("{name}.log"));
        let out = std::fs::create_dir_all(&self.logs).and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
        });
        let mut cmd = container::command_in(
            &self.exe,
            &task.netns,
            &task.resolv_conf,
            Some(name),
            &svc.command,
        );
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
                self.tasks.remove(name, Ending::Exited).await;
                return;
            }
        };
        let Some(pid) = child.id() else { return };
        // Reap it when it exits; the task's own watch ends the task.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        match self.tasks.set_pid(name, pid).await {
            Ok(_) => tracing::info!(task = %name, pid, "replica started"),
            Err(e) => {
                tracing::warn!(task = %name, error = %e, "cannot record the replica's process")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_over_nodes_and_everyone_agrees() {
        let nodes = ["n1", "n2", "n3"];
        let mut load: HashMap<String, usize> = HashMap::new();
        for slot in 1..=6 {
            let n = preferred("web", slot, nodes.iter().copied(), &load).unwrap();
            *load.entry(n.to_string()).or_default() += 1;
        }
        assert_eq!(
            load.values().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([2])
        );
        // The same inputs in another order pick the same node.
        let a = preferred("web", 7, nodes.iter().copied(), &load);
        let b = preferred("web", 7, nodes.iter().rev().copied(), &load);
        assert_eq!(a, b);
    }
}
