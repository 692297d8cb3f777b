//! The embedded store: the whole contract in one process, for a single node
//! and for fast tests. State is kept in memory and written to
//! `<state-dir>/store.json` (a temporary file renamed into place, at most
//! every [`FLUSH_EVERY`]), so it survives a restart. Leases survive too and,
//! as in etcd, get a fresh TTL when the store opens again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{Entry, Event, LeaseId, Revision, Store, StoreError, Watch, WatchItem};

/// Changes kept for watches that start in the past.
pub const HISTORY: usize = 10_000;
/// Longest a change waits before it is written to disk.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<WatchItem>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    data: BTreeMap<String, Entry>,
    history: VecDeque<Event>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
    dirty: bool,
}

/// What goes to disk.
#[derive(Serialize, Deserialize)]
struct Saved {
    revision: Revision,
    next_lease: LeaseId,
    entries: Vec<Entry>,
    /// Lease id and TTL in milliseconds.
    leases: Vec<(LeaseId, u64)>,
}

/// The embedded store.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    file: Option<PathBuf>,
    wake: Arc<Notify>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// Applies one change: bumps the revision, records and broadcasts it.
    fn record(&mut self, event: Event) {
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.revision());
            }
        }
        self.watchers.retain(|w| {
            let key = match &event {
                Event::Put(e) => &e.key,
                Event::Delete { key, .. } => key,
            };
            !key.starts_with(&w.prefix) || w.tx.send(WatchItem::Events(vec![event.clone()])).is_ok()
        });
        self.dirty = true;
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        if let Some(old) = self.data.get(key) {
            if old.lease != 0 && old.lease != lease {
                if let Some(l) = self.leases.get_mut(&old.lease) {
                    l.keys.remove(key);
                }
            }
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_string());
        }
        self.revision += 1;
        let entry = Entry {
            key: key.to_string(),
            value,
            mod_revision: self.revision,
            lease,
        };
        self.data.insert(key.to_string(), entry.clone());
        self.record(Event::Put(entry));
        Ok(self.revision)
    }

    fn delete(&mut self, key: &str) -> Revision {
        if let Some(old) = self.data.remove(key) {
            if let Some(l) = self.leases.get_mut(&old.lease) {
                l.keys.remove(key);
            }
            self.revision += 1;
            let revision = self.revision;
            self.record(Event::Delete {
                key: key.to_string(),
                revision,
            });
        }
        self.revision
    }

    fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        for key in lease.keys {
            self.delete(&key);
        }
        self.dirty = true;
        true
    }

    fn mod_revision(&self, key: &str) -> Revision {
        self.data.get(key).map_or(0, |e| e.mod_revision)
    }

    fn saved(&self) -> Saved {
        Saved {
            revision: self.revision,
            next_lease: self.next_lease,
            entries: self.data.values().cloned().collect(),
            leases: self
                .leases
                .iter()
                .map(|(id, l)| (*id, l.ttl.as_millis() as u64))
                .collect(),
        }
    }
}

impl MemoryStore {
    /// A store that keeps nothing on disk (tests, throwaway nodes).
    pub fn ephemeral() -> Arc<MemoryStore> {
        Self::start(State::default(), None)
    }

    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Arc<MemoryStore>, StoreError> {
        let files = |why: String| StoreError::Files {
            path: dir.display().to_string(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| files(e.to_string()))?;
        let file = dir.join("store.json");
        let mut state = State::default();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes)
                    .map_err(|e| files(format!("store.json is not a shoal store: {e}")))?;
                let now = Instant::now();
                state.revision = saved.revision;
                state.compacted = saved.revision;
                state.next_lease = saved.next_lease;
                for (id, ttl) in saved.leases {
                    let ttl = Duration::from_millis(ttl);
                    state.leases.insert(
                        id,
                        Lease {
                            ttl,
                            deadline: now + ttl,
                            keys: BTreeSet::new(),
                        },
                    );
                }
                for e in saved.entries {
                    if let Some(l) = state.leases.get_mut(&e.lease) {
                        l.keys.insert(e.key.clone());
                    }
                    state.data.insert(e.key.clone(), e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(files(e.to_string())),
        }
        Ok(Self::start(state, Some(file)))
    }

    fn start(state: State, file: Option<PathBuf>) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore {
            state: Mutex::new(state),
            file,
            wake: Arc::new(Notify::new()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(housekeeping(
                Arc::downgrade(&store),
                Arc::clone(&store.wake),
            ));
        }
        store
    }

    /// Writes the state to disk now if it changed.
    pub fn flush(&self) -> Result<(), StoreError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let saved = {
            let mut s = lock(&self.state);
            if !s.dirty {
                return Ok(());
            }
            s.dirty = false;
            s.saved()
        };
        let files = |why: String| StoreError::Files {
            path: file.display().to_string(),
            why,
        };
        let tmp = file.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&saved).map_err(|e| files(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| files(e.to_string()))?;
        std::fs::rename(&tmp, file).map_err(|e| files(e.to_string()))
    }

    fn changed(&self) {
        self.wake.notify_one();
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        // Let the housekeeping task see that the store is gone.
        self.wake.notify_one();
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "could not save the store");
        }
    }
}

/// Ends expired leases and flushes to disk; stops when the store is gone.
async fn housekeeping(store: Weak<MemoryStore>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(s) = store.upgrade() else { return };
            let now = Instant::now();
            let mut st = lock(&s.state);
            let expired: Vec<LeaseId> = st
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                tracing::info!(lease = format!("{id:x}"), "lease expired");
                st.end_lease(id);
            }
            let next = st.leases.values().map(|l| l.deadline).min();
            drop(st);
            if let Err(e) = s.flush() {
                tracing::error!(error = %e, "could not save the store");
            }
            next
        };
        let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = wake.notified() => tokio::time::sleep(FLUSH_EVERY).await,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn range(&self, prefix: &str) -> Result<(Vec<Entry>, Revision), StoreError> {
        let s = lock(&self.state);
        let entries = s
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        Ok((entries, s.revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        let r = lock(&self.state).put(key, value, lease);
        self.changed();
        r
    }

    async fn delete(&self, key: &str) -> Result<Revision, StoreError> {
        let r = lock(&self.state).delete(key);
        self.changed();
        Ok(r)
    }

    async fn put_if(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<bool, StoreError> {
        let mut s = lock(&self.state);
        if s.mod_revision(key) != expected {
            return Ok(false);
        }
        s.put(key, value, lease)?;
        drop(s);
        self.changed();
        Ok(true)
    }

    async fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StoreError> {
        let mut s = lock(&self.state);
        if expected == 0 || s.mod_revision(key) != expected {
            return Ok(false);
        }
        s.delete(key);
        drop(s);
        self.changed();
        Ok(true)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease TTL must be above 0".into()));
        }
        let mut s = lock(&self.state);
        s.next_lease += 1;
        let id = s.next_lease;
        s.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        s.dirty = true;
        drop(s);
        self.changed();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut s = lock(&self.state);
        let l = s
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        drop(s);
        self.changed();
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let ended = lock(&self.state).end_lease(lease);
        self.changed();
        if ended {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = lock(&self.state);
        if from <= s.compacted {
            let _ = tx.send(WatchItem::Compacted {
                current: s.revision,
            });
            return Ok(rx);
        }
        let past: Vec<Event> = s
            .history
            .iter()
            .filter(|e| e.revision() >= from)
            .filter(|e| match e {
                Event::Put(en) => en.key.starts_with(prefix),
                Event::Delete { key, .. } => key.starts_with(prefix),
            })
            .cloned()
            .collect();
        if !past.is_empty() {
            let _ = tx.send(WatchItem::Events(past));
        }
        s.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(rx)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut s = lock(&self.state);
        let upto = revision.min(s.revision);
        s.history.retain(|e| e.revision() >= upto);
        s.compacted = s.compacted.max(upto - 1);
        Ok(())
    }
}
