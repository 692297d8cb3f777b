//! The embedded store's state in memory: entries, leases, the recent
//! history and the watchers. Every write is applied here first (so reads
//! and compare-and-swap see writes in the order they were made) and leaves
//! the [`Change`]s the disk must record; watchers are sent events only once
//! those are durable ([`State::deliver`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::store::{Entry, Event, LeaseId, Revision, StoreError, WatchItem};

/// Changes kept for watches that start in the past.
pub const HISTORY: usize = 10_000;

/// One change as the disk records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry as it now is.
    Put(Entry),
    /// The key is gone.
    Delete(String),
    /// A lease and its TTL.
    Grant(LeaseId, Duration),
    /// The lease is gone (its entries' deletes are recorded too).
    Revoke(LeaseId),
}

/// A lease: its TTL, when it ends without a keep-alive, and its keys.
#[derive(Debug)]
pub struct Lease {
    /// Its time to live.
    pub ttl: Duration,
    /// When it ends unless kept alive.
    pub deadline: Instant,
    /// The keys hanging on it.
    pub keys: BTreeSet<String>,
}

/// A watch: its prefix, its channel and the first revision it still needs.
#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<WatchItem>,
    next: Revision,
}

/// Everything the store holds in memory.
#[derive(Debug, Default)]
pub struct State {
    /// The store-wide revision (of the last write applied here).
    pub revision: Revision,
    /// The last revision whose history is gone.
    pub compacted: Revision,
    /// The last revision on disk (watchers have been sent up to it).
    pub durable: Revision,
    /// The entries.
    pub data: BTreeMap<String, Entry>,
    /// Recent events, oldest first.
    history: VecDeque<Event>,
    /// Live leases.
    pub leases: HashMap<LeaseId, Lease>,
    /// The last lease id handed out.
    pub next_lease: LeaseId,
    watchers: Vec<Watcher>,
    /// Changes not yet handed to the disk, in order.
    pub changes: Vec<Change>,
}

fn key_of(event: &Event) -> &str {
    match event {
        Event::Put(e) => &e.key,
        Event::Delete { key, .. } => key,
    }
}

impl State {
    fn record(&mut self, event: Event) {
        self.history.push_back(event);
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.revision());
            }
        }
    }

    /// Writes `key`; returns the new revision.
    pub fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
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
        self.changes.push(Change::Put(entry.clone()));
        self.record(Event::Put(entry));
        Ok(self.revision)
    }

    /// Deletes `key` if present; returns the revision after it.
    pub fn delete(&mut self, key: &str) -> Revision {
        if let Some(old) = self.data.remove(key) {
            if let Some(l) = self.leases.get_mut(&old.lease) {
                l.keys.remove(key);
            }
            self.revision += 1;
            let revision = self.revision;
            self.changes.push(Change::Delete(key.to_string()));
            self.record(Event::Delete {
                key: key.to_string(),
                revision,
            });
        }
        self.revision
    }

    /// A new lease living `ttl` from now.
    pub fn grant(&mut self, ttl: Duration) -> LeaseId {
        self.next_lease += 1;
        let id = self.next_lease;
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        self.changes.push(Change::Grant(id, ttl));
        id
    }

    /// Ends lease `id` and deletes its entries; false if there is none.
    pub fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        for key in lease.keys {
            self.delete(&key);
        }
        self.changes.push(Change::Revoke(id));
        true
    }

    /// The leases whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<LeaseId> {
        self.leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `key`'s `mod_revision`, 0 if absent.
    pub fn mod_revision(&self, key: &str) -> Revision {
        self.data.get(key).map_or(0, |e| e.mod_revision)
    }

    /// Starts a watch of `prefix` from `from`: the durable history from
    /// there now, the rest as it becomes durable.
    pub fn watch(&mut self, prefix: &str, from: Revision, tx: mpsc::UnboundedSender<WatchItem>) {
        if from <= self.compacted {
            let _ = tx.send(WatchItem::Compacted {
                current: self.revision,
            });
            return;
        }
        let past: Vec<Event> = self
            .history
            .iter()
            .filter(|e| e.revision() >= from && e.revision() <= self.durable)
            .filter(|e| key_of(e).starts_with(prefix))
            .cloned()
            .collect();
        if !past.is_empty() {
            let _ = tx.send(WatchItem::Events(past));
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
            next: from.max(self.durable + 1),
        });
    }

    /// Sends watchers every event up to revision `upto`, which is now on
    /// disk, and drops the watchers whose receiver is gone.
    pub fn deliver(&mut self, upto: Revision) {
        if upto <= self.durable {
            return;
        }
        let from = self.durable + 1;
        self.durable = upto;
        // Revisions are dense (one event each): history that no longer
        // reaches back to `from` lost events a watcher still needs.
        let oldest = self.history.front().map_or(upto + 1, Event::revision);
        let current = self.revision;
        self.watchers.retain(|w| {
            let missed = w.next < oldest && w.next <= upto;
            if missed {
                let _ = w.tx.send(WatchItem::Compacted { current });
            }
            !missed
        });
        let fresh: Vec<&Event> = self
            .history
            .iter()
            .rev()
            .take_while(|e| e.revision() >= from)
            .collect();
        self.watchers.retain_mut(|w| {
            let mine: Vec<Event> = fresh
                .iter()
                .rev()
                .filter(|e| e.revision() >= w.next && e.revision() <= upto)
                .filter(|e| key_of(e).starts_with(&w.prefix))
                .map(|e| (*e).clone())
                .collect();
            w.next = w.next.max(upto + 1);
            mine.is_empty() || w.tx.send(WatchItem::Events(mine)).is_ok()
        });
    }

    /// Forgets history before `revision`.
    pub fn compact(&mut self, revision: Revision) {
        let upto = revision.min(self.revision);
        self.history.retain(|e| e.revision() >= upto);
        self.compacted = self.compacted.max(upto - 1);
    }

    /// The entries under `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Vec<Entry> {
        self.data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect()
    }
}
