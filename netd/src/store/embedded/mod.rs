//! The embedded store: the whole contract in one process, for a single node
//! and for fast tests. Reads and watches are served from memory; every
//! write is on disk before it is acknowledged, as etcd does with its WAL.
//!
//! A write is applied to the in-memory [`state::State`] under its lock (so
//! compare-and-swap sees every earlier write), queued for the commit thread
//! ([`commit`]), and answered once that thread has committed it to SQLite
//! ([`disk`]): concurrent writes share one fsync. Watchers see a change
//! only once it is durable, and a read waits until what it saw is durable,
//! so nothing a crash can take back is ever shown. Leases survive a
//! restart and, as in etcd, get a fresh TTL when the store opens again.
//!
//! # Layout
//! - this file: [`EmbeddedStore`], the [`Store`] implementation, and lease
//!   expiry.
//! - [`state`]: entries, leases, history and watchers in memory.
//! - [`commit`]: the group-commit thread.
//! - [`disk`]: the SQLite file, crash recovery and the `store.json`
//!   migration.

pub mod commit;
pub mod disk;
pub mod state;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use self::commit::Committer;
use self::disk::Disk;
use self::state::{Lease, State};
use super::{Entry, LeaseId, Revision, Store, StoreError, Watch};

/// The embedded store.
pub struct EmbeddedStore {
    state: Arc<Mutex<State>>,
    /// `None`: nothing is kept on disk.
    committer: Option<Committer>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("durable", &self.committer.is_some())
            .finish()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EmbeddedStore {
    /// A store that keeps nothing on disk (tests, throwaway nodes).
    pub fn ephemeral() -> Arc<EmbeddedStore> {
        Self::start(Arc::new(Mutex::new(State::default())), None)
    }

    /// Opens (or creates) the store under `dir`, carrying an older agent's
    /// `store.json` over once. A log that ends in a write a crash cut short
    /// is opened without it, with one warning.
    pub fn open(dir: &Path) -> Result<Arc<EmbeddedStore>, StoreError> {
        let (disk, loaded) = Disk::open(dir)?;
        if let Some(n) = loaded.migrated {
            tracing::info!(dir = %dir.display(), entries = n, revision = loaded.revision, "carried store.json over into store.db (kept as store.json.migrated)");
        }
        if loaded.torn_bytes > 0 {
            tracing::warn!(
                file = %disk.path().display(),
                bytes = loaded.torn_bytes,
                revision = loaded.revision,
                "the store's log ended in a write a crash cut short (never acknowledged); dropped it, the store is at the last complete commit"
            );
        }
        let now = Instant::now();
        let mut state = State::default();
        state.revision = loaded.revision;
        state.compacted = loaded.revision;
        state.durable = loaded.revision;
        state.next_lease = loaded.next_lease;
        for (id, ttl) in loaded.leases {
            let keys = Default::default();
            let deadline = now + ttl;
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline,
                    keys,
                },
            );
        }
        for e in loaded.entries {
            if let Some(l) = state.leases.get_mut(&e.lease) {
                l.keys.insert(e.key.clone());
            }
            state.data.insert(e.key.clone(), e);
        }
        let path = disk.path().display().to_string();
        let state = Arc::new(Mutex::new(state));
        // Without its commit thread the store would acknowledge writes it
        // never records: refuse to open instead.
        let committer =
            Committer::start(disk, Arc::clone(&state)).map_err(|e| StoreError::Files {
                path,
                why: format!("cannot start the commit thread: {e}"),
            })?;
        Ok(Self::start(state, Some(committer)))
    }

    fn start(state: Arc<Mutex<State>>, committer: Option<Committer>) -> Arc<EmbeddedStore> {
        let store = Arc::new(EmbeddedStore {
            state,
            committer,
            wake: Arc::new(Notify::new()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(expire_leases(
                Arc::downgrade(&store),
                Arc::clone(&store.wake),
            ));
        }
        store
    }

    /// Applies `f` under the state lock and queues what it changed; returns
    /// its result and the ticket to wait for before answering.
    fn apply<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<(T, u64), StoreError> {
        let mut s = lock(&self.state);
        if let Some(c) = &self.committer {
            c.check()?;
        }
        let out = f(&mut s);
        let changes = std::mem::take(&mut s.changes);
        let ticket = match &self.committer {
            Some(c) => c.submit(changes, s.revision, s.next_lease),
            None => {
                let r = s.revision;
                s.deliver(r);
                0
            }
        };
        Ok((out?, ticket))
    }

    /// [`Self::apply`], then waits until the change is durable.
    async fn write<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (out, ticket) = self.apply(f)?;
        self.durable(ticket).await?;
        Ok(out)
    }

    async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        match &self.committer {
            Some(c) => c.wait(ticket).await,
            None => Ok(()),
        }
    }

    /// Waits until every write made so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.committer {
            Some(c) => c.wait(c.last_ticket()).await,
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Let the lease task see that the store is gone; the committer
        // commits what is queued as it stops.
        self.wake.notify_one();
    }
}

/// Ends expired leases (their deletes are committed like any write);
/// stops when the store is gone.
async fn expire_leases(store: Weak<EmbeddedStore>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(s) = store.upgrade() else { return };
            let ended = s.apply(|st| {
                for id in st.expired(Instant::now()) {
                    tracing::info!(lease = format!("{id:x}"), "lease expired");
                    st.end_lease(id);
                }
                Ok(st.leases.values().map(|l| l.deadline).min())
            });
            ended.ok().map(|(next, _)| next).unwrap_or_default()
        };
        let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = wake.notified() => {}
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn range(&self, prefix: &str) -> Result<(Vec<Entry>, Revision), StoreError> {
        let (read, ticket) = {
            let s = lock(&self.state);
            let ticket = self.committer.as_ref().map_or(0, Committer::last_ticket);
            ((s.range(prefix), s.revision), ticket)
        };
        // What was read may include writes still on their way to disk.
        self.durable(ticket).await?;
        Ok(read)
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        self.write(|s| s.put(key, value, lease)).await
    }

    async fn delete(&self, key: &str) -> Result<Revision, StoreError> {
        self.write(|s| Ok(s.delete(key))).await
    }

    async fn put_if(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<bool, StoreError> {
        self.write(|s| {
            if s.mod_revision(key) != expected {
                return Ok(false);
            }
            s.put(key, value, lease).map(|_| true)
        })
        .await
    }

    async fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StoreError> {
        self.write(|s| {
            if expected == 0 || s.mod_revision(key) != expected {
                return Ok(false);
            }
            s.delete(key);
            Ok(true)
        })
        .await
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease TTL must be above 0".into()));
        }
        let id = self.write(|s| Ok(s.grant(ttl))).await?;
        self.wake.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // Deadlines are not kept on disk: a reopened store gives every
        // lease a fresh TTL.
        let mut s = lock(&self.state);
        let l = s
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        if self.write(|s| Ok(s.end_lease(lease))).await? {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.state).watch(prefix, from, tx);
        Ok(rx)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        lock(&self.state).compact(revision);
        Ok(())
    }
}
