//! Cluster operations on the store: what the agent's API calls to create,
//! change and remove networks, services and stacks. Each operation checks
//! its input, then commits by compare-and-swap, so concurrent callers on
//! any node never both succeed where only one may; a failure part way
//! undoes the steps already taken, so nothing is left half applied.
//!
//! Keys written here besides the model's (see [`crate::model`]):
//! - `alloc/subnets`: JSON map of network name to subnet, the one key
//!   through which subnets are reserved (overlap is decided on it);
//! - `alloc/port/<port>` = service name: a published port's holder;
//! - VNIs and VIPs through [`crate::alloc`].
//!
//! # Layout
//! - [`error`]: [`OpError`], each variant with its HTTP status.
//! - [`validate`]: checks of specs that need no store.
//! - [`network`]: create, list, get and remove networks.
//! - `subnets` (private): the subnet reservations and the default pool.
//! - [`service`]: create, update, scale, apply and remove services; tasks
//!   and nodes.
//! - `claims` (private): published ports and VIPs claimed for a service,
//!   and the compare-and-swap commit of a service.
//! - [`stack`]: deploy and remove stacks (labelled groups of networks and
//!   services).
//! - [`gc`]: claims a crash left without an owner, removed at start.
//! - [`schema`]: the store's schema version, marked and checked at start.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{Revision, Store};

mod claims;
pub mod error;
pub mod gc;
pub mod network;
pub mod schema;
pub mod service;
pub mod stack;
mod subnets;
pub mod validate;

#[cfg(test)]
mod tests;

pub use error::OpError;
pub use network::{create_network, get_network, list_networks, remove_network};
pub use service::{
    apply_service, create_service, get_service, list_nodes, list_services, remove_service,
    scale_service, service_tasks, update_service, Applied,
};
pub use stack::{deploy_stack, remove_stack, StackItem, StackRemoval, StackReport, STACK_LABEL};
pub use subnets::POOL;

/// What an idempotent operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The object did not exist and was made.
    Created,
    /// The object existed and was changed to match.
    Updated,
    /// The object already matched.
    Unchanged,
}

/// An object as stored, with the revision of its last change (for
/// compare-and-swap).
#[derive(Debug, Clone)]
pub(crate) struct Stored<T> {
    pub(crate) value: T,
    pub(crate) rev: Revision,
}

/// The entry at exactly `key` (a range would also match longer keys).
pub(crate) async fn get_raw(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Stored<Vec<u8>>>, OpError> {
    let (entries, _) = store.range(key).await?;
    Ok(entries.into_iter().find(|e| e.key == key).map(|e| Stored {
        value: e.value,
        rev: e.mod_revision,
    }))
}

/// The decoded value at `key`; a value that does not decode is a conflict
/// naming the key (it was written by a newer or broken client).
pub(crate) async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Stored<T>>, OpError> {
    let Some(raw) = get_raw(store, key).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&raw.value) {
        Ok(value) => Ok(Some(Stored {
            value,
            rev: raw.rev,
        })),
        Err(e) => Err(OpError::Conflict {
            field: "name".into(),
            message: format!("the stored value of `{key}` does not decode ({e})"),
        }),
    }
}

/// Every value under `prefix` that decodes, in key order, with its key.
pub(crate) async fn list_json<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(String, T)>, OpError> {
    let (entries, _) = store.range(prefix).await?;
    Ok(entries
        .into_iter()
        .filter_map(|e| match serde_json::from_slice(&e.value) {
            Ok(v) => Some((e.key, v)),
            Err(err) => {
                tracing::warn!(key = %e.key, error = %err, "skipping a value that does not decode");
                None
            }
        })
        .collect())
}

/// Names as a list for messages: "`a`, `b` and 3 more".
pub(crate) fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// A model value as stored.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model values always encode")
}
