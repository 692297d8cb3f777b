//! What a task create cut short by a crash leaves, removed once the
//! recorded tasks are taken back: addresses this node's IPAM holds for
//! tasks it does not know, and namespaces named like this node's tasks
//! that no task has (their processes killed first). The endpoint such a
//! create may have written hangs on the dead agent's lease and ends with
//! it.

use std::collections::BTreeSet;

use super::process::kill_leftovers;
use super::Tasks;
use crate::container::ContainerNs;

impl Tasks {
    /// Removes the leftovers (see the module docs). Holds the create lock,
    /// so no create is between its steps meanwhile.
    pub(super) async fn sweep(&self) {
        let _guard = self.inner.ops.lock().await;
        let known: BTreeSet<String> = self
            .lock()
            .keys()
            .cloned()
            .chain(self.pending().iter().cloned())
            .collect();
        let store = self.inner.store.as_ref();
        let mine = format!("{}/", self.inner.node);
        match store.range("ipam/").await {
            Ok((entries, _)) => {
                for e in entries.iter().filter(|e| e.key.contains("/addr/")) {
                    let value = String::from_utf8_lossy(&e.value);
                    let Some(owner) = value.strip_prefix(&mine) else {
                        continue;
                    };
                    if owner.starts_with("lb:") || known.contains(owner) {
                        continue;
                    }
                    match store.delete_if(&e.key, e.mod_revision).await {
                        Ok(_) => {
                            tracing::warn!(address = %e.key, task = owner, "released the address of a task no agent knows (its create was cut short)")
                        }
                        Err(err) => {
                            tracing::warn!(address = %e.key, error = %err, "cannot release an address no task owns now")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for addresses no task owns"),
        }
        let prefix = format!("shoal-t.{}.", self.inner.node);
        let spaces = tokio::task::spawn_blocking(move || {
            let list = shoal_overlay::netns::list(&prefix).unwrap_or_default();
            list.into_iter()
                .filter_map(|ns| Some((ns.strip_prefix(&prefix)?.to_string(), ns.clone())))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (task, ns) in spaces {
            if known.contains(&task) {
                continue;
            }
            let removed = tokio::task::spawn_blocking(move || {
                let killed = kill_leftovers(&ns);
                ContainerNs::remove(&ns).map(|()| (ns, killed))
            })
            .await;
            match removed {
                Ok(Ok((ns, killed))) => {
                    tracing::warn!(netns = %ns, killed, "removed the namespace of a task no agent knows (its create was cut short)")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove a namespace no task owns"),
                Err(e) => tracing::warn!(error = %e, "cannot remove a namespace no task owns"),
            }
        }
    }
}
