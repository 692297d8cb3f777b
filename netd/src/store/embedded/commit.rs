//! Group commit: writes are applied in memory under the state lock and
//! queued here with a ticket; one thread takes everything queued, records
//! it in one transaction (one fsync), then hands the batch's events to the
//! watchers and marks its tickets durable. A writer returns once its
//! ticket is durable, so concurrent writes share an fsync instead of
//! queueing for one each.
//!
//! If the disk refuses a commit, the store stops: writes fail with the
//! reason, and so do reads (what memory holds is no longer what the disk
//! holds), as with a store that cannot be reached: nodes keep forwarding on
//! their last snapshot. A restart reads back what was durable.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::disk::Disk;
use super::state::{Change, State};
use crate::store::{LeaseId, Revision, StoreError};

/// How far the disk has got.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every ticket up to this one is on disk.
    ticket: u64,
    /// Why the disk stopped taking writes, if it did.
    failed: Option<String>,
}

#[derive(Default)]
struct Queue {
    changes: Vec<Change>,
    revision: Revision,
    next_lease: LeaseId,
    /// The last ticket handed out.
    ticket: u64,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    more: Condvar,
    durable: watch::Sender<Durable>,
    path: String,
}

/// The commit thread and its queue.
pub struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Committer {
    /// Starts the thread that writes to `disk` and, after each commit,
    /// delivers the committed events of `state` to its watchers.
    pub fn start(disk: Disk, state: Arc<Mutex<State>>) -> std::io::Result<Committer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            more: Condvar::new(),
            durable: watch::channel(Durable::default()).0,
            path: disk.path().display().to_string(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("netd-store-commit".into())
            .spawn(move || run(disk, &s, &state))?;
        Ok(Committer {
            shared,
            thread: Some(thread),
        })
    }

    /// Fails if the disk has stopped taking writes.
    pub fn check(&self) -> Result<(), StoreError> {
        match &self.shared.durable.borrow().failed {
            Some(why) => Err(self.failed(why)),
            None => Ok(()),
        }
    }

    fn failed(&self, why: &str) -> StoreError {
        StoreError::Files {
            path: self.shared.path.clone(),
            why: format!("the store takes no writes since a commit failed: {why}"),
        }
    }

    /// Queues `changes` (made under the state lock, in order) with the
    /// store's counters after them; returns the ticket to wait for. With
    /// no change, the ticket of the last queued write: whatever the caller
    /// read may depend on it.
    pub fn submit(&self, changes: Vec<Change>, revision: Revision, next_lease: LeaseId) -> u64 {
        let mut q = lock(&self.shared.queue);
        if changes.is_empty() {
            return q.ticket;
        }
        q.changes.extend(changes);
        q.revision = revision;
        q.next_lease = next_lease;
        q.ticket += 1;
        self.shared.more.notify_one();
        q.ticket
    }

    /// Waits until `ticket` is on disk.
    pub async fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut rx = self.shared.durable.subscribe();
        let done = rx
            .wait_for(|d| d.ticket >= ticket || d.failed.is_some())
            .await
            .map(|d| d.clone());
        match done {
            Ok(d) if d.ticket >= ticket => Ok(()),
            Ok(d) => Err(self.failed(d.failed.as_deref().unwrap_or_default())),
            Err(_) => Err(self.failed("the commit thread is gone")),
        }
    }

    /// The last ticket handed out.
    pub fn last_ticket(&self) -> u64 {
        lock(&self.shared.queue).ticket
    }
}

impl Drop for Committer {
    /// Commits what is queued, then stops the thread.
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.more.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Marks the store failed if the commit thread ends by a panic, so no
/// writer or reader waits for it for ever.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .durable
                .send_modify(|d| d.failed = Some("the commit thread panicked".into()));
        }
    }
}

fn run(mut disk: Disk, shared: &Shared, state: &Mutex<State>) {
    let _guard = PanicGuard(shared);
    loop {
        let (changes, revision, next_lease, ticket) = {
            let mut q = lock(&shared.queue);
            while q.changes.is_empty() && !q.stop {
                q = shared.more.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.changes.is_empty() {
                return;
            }
            let changes = std::mem::take(&mut q.changes);
            (changes, q.revision, q.next_lease, q.ticket)
        };
        if let Err(e) = disk.commit(&changes, revision, next_lease) {
            tracing::error!(file = %shared.path, error = %e, "cannot record a change in the store; taking no more writes until a restart");
            shared
                .durable
                .send_modify(|d| d.failed = Some(e.to_string()));
            return;
        }
        lock(state).deliver(revision);
        shared.durable.send_modify(|d| d.ticket = ticket);
    }
}
