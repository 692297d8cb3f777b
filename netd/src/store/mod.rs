//! The cluster store: a small key-value contract with revisions, leases,
//! compare-and-swap and watches from a revision, kept by two backends:
//! [`embedded::EmbeddedStore`] (one node, every write durable in a SQLite
//! file under the state directory before it is acknowledged) and [`etcd::EtcdStore`] (etcd v3, a cluster).
//!
//! The contract is etcd's, reduced to what netd needs, so both backends
//! behave the same and one conformance suite tests both:
//! - every change bumps a store-wide revision; an entry remembers the
//!   revision of its last change (`mod_revision`);
//! - `put_if`/`delete_if` apply only if the entry's `mod_revision` is as
//!   expected (0: the key is absent), so allocation needs no single writer;
//! - an entry may hang on a lease; when the lease expires or is revoked its
//!   entries are deleted (and watchers see the deletes);
//! - a watch starts at a revision and sees every later change under its
//!   prefix in order, or [`WatchItem::Compacted`] when that history is gone:
//!   the watcher must then re-read (`range`) and watch again from there.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub mod embedded;
pub mod etcd;

/// A store-wide change counter.
pub type Revision = i64;

/// A lease handle; 0 means "no lease".
pub type LeaseId = i64;

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value (JSON in netd's use).
    pub value: Vec<u8>,
    /// The revision of the entry's last change.
    pub mod_revision: Revision,
    /// The lease it hangs on (0 = none).
    pub lease: LeaseId,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The entry was created or changed.
    Put(Entry),
    /// The key was deleted (directly or by its lease ending) at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: Revision,
    },
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(e) => e.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Changes, in revision order.
    Events(Vec<Event>),
    /// The requested history is gone (compacted): re-read and watch again
    /// from `current`.
    Compacted {
        /// The store's revision when this was noticed.
        current: Revision,
    },
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (etcd down, connection lost).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// The store's own files could not be read or written.
    #[error("store files under {path}: {why}")]
    Files {
        /// The file or directory.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// An argument was refused (a bad endpoint list, a TTL out of range).
    #[error("{0}")]
    Invalid(String),
}

/// A channel of watch items; it closes when the watch breaks (the caller
/// then re-reads and watches again).
pub type Watch = mpsc::UnboundedReceiver<WatchItem>;

/// The store contract (see the module docs).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every entry whose key starts with `prefix`, in key order, and the
    /// revision they were read at.
    async fn range(&self, prefix: &str) -> Result<(Vec<Entry>, Revision), StoreError>;
    /// Writes `key`; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError>;
    /// Deletes `key` (absent is fine); returns the revision after it.
    async fn delete(&self, key: &str) -> Result<Revision, StoreError>;
    /// Writes only if `key`'s `mod_revision` is `expected` (0 = absent).
    async fn put_if(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<bool, StoreError>;
    /// Deletes only if `key`'s `mod_revision` is `expected`.
    async fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StoreError>;
    /// A new lease living `ttl` past its last keep-alive.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Renews a lease for another TTL.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Ends a lease now, deleting its entries.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Watches `prefix` from revision `from` (inclusive).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError>;
    /// Forgets history before `revision` (watches from earlier get
    /// [`WatchItem::Compacted`]).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
