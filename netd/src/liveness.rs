//! A node's liveness in the store: its `node/<name>` entry and its
//! endpoints hang on one lease, renewed every third of the TTL. If the
//! lease is lost (the store was away longer than the TTL, or someone revoked
//! it), the node takes a new lease and re-asserts everything it owns, so a
//! node that comes back is whole again without a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::{keys, Endpoint, Node};
use crate::store::{LeaseId, Store, StoreError};

/// What this node owns in the store, re-asserted on every new lease.
#[derive(Debug)]
pub struct Owned {
    node: Mutex<Node>,
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
    lease: Mutex<LeaseId>,
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own model types always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Owned {
    /// Ownership of `node`, with no endpoints yet and no lease.
    pub fn new(node: Node) -> Arc<Owned> {
        Arc::new(Owned {
            node: Mutex::new(node),
            endpoints: Mutex::new(BTreeMap::new()),
            lease: Mutex::new(0),
        })
    }

    /// The lease in force (0 before the first registration).
    pub fn lease(&self) -> LeaseId {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node entry as owned now.
    pub fn node(&self) -> Node {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records this node's lb address in `network` and writes the node
    /// entry on the lease.
    pub async fn set_lb_address(
        &self,
        store: &dyn Store,
        network: &str,
        ip: std::net::Ipv4Addr,
    ) -> Result<(), StoreError> {
        let node = {
            let mut n = self.node.lock().unwrap_or_else(|e| e.into_inner());
            n.lb_addresses.insert(network.to_string(), ip);
            n.clone()
        };
        store
            .put(&keys::node(&node.name), json(&node), self.lease())
            .await
            .map(|_| ())
    }

    /// Replaces this node's lb addresses (networks gone, or addresses
    /// given up) and writes the node entry on the lease.
    pub async fn set_lb_addresses(
        &self,
        store: &dyn Store,
        addresses: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    ) -> Result<(), StoreError> {
        let node = {
            let mut n = self.node.lock().unwrap_or_else(|e| e.into_inner());
            n.lb_addresses = addresses;
            n.clone()
        };
        store
            .put(&keys::node(&node.name), json(&node), self.lease())
            .await
            .map(|_| ())
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Takes a new lease and writes the node and every owned endpoint on it.
    pub async fn register(&self, store: &dyn Store, ttl: Duration) -> Result<LeaseId, StoreError> {
        let lease = store.grant(ttl).await?;
        let node = self.node();
        store
            .put(&keys::node(&node.name), json(&node), lease)
            .await?;
        for e in self.endpoints() {
            self.reassert(store, e, lease).await?;
        }
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
        Ok(lease)
    }

    /// Makes sure an owned endpoint is in the store on `lease`: written if
    /// absent, moved onto `lease` if on another (keeping the stored value,
    /// which has the latest state), left alone if already there, and left
    /// to another node that took the name while this one was away (this
    /// node then forgets its own; the scheduler stops the local replica
    /// whose slot another node holds). Returns whether it wrote.
    ///
    /// Never overwrites a present entry with the owned copy: that copy can
    /// be older than a state the health checker has just written.
    async fn reassert(
        &self,
        store: &dyn Store,
        e: Endpoint,
        lease: LeaseId,
    ) -> Result<bool, StoreError> {
        let key = keys::endpoint(&e.network, &e.name);
        for _ in 0..5 {
            let (entries, _) = store.range(&key).await?;
            let Some(entry) = entries.into_iter().find(|x| x.key == key) else {
                if store.put_if(&key, 0, json(&e), lease).await? {
                    return Ok(true);
                }
                continue;
            };
            let stored = serde_json::from_slice::<Endpoint>(&entry.value).ok();
            if let Some(t) = stored.filter(|t| t.node != e.node) {
                tracing::warn!(endpoint = %e.name, network = %e.network, owner = %t.node,
                    "the name was taken by another node while this node was away; leaving it to them");
                self.endpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                return Ok(false);
            }
            if entry.lease == lease {
                return Ok(false);
            }
            if store
                .put_if(&key, entry.mod_revision, entry.value, lease)
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds or changes an owned endpoint and writes it on the lease.
    pub async fn set_endpoint(&self, store: &dyn Store, e: Endpoint) -> Result<(), StoreError> {
        let key = keys::endpoint(&e.network, &e.name);
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), e.clone());
        store.put(&key, json(&e), self.lease()).await.map(|_| ())
    }

    /// Creates an owned endpoint only if its key is free in the store
    /// (compare-and-swap); false if another endpoint has the name.
    pub async fn claim_endpoint(&self, store: &dyn Store, e: Endpoint) -> Result<bool, StoreError> {
        let key = keys::endpoint(&e.network, &e.name);
        if !store.put_if(&key, 0, json(&e), self.lease()).await? {
            return Ok(false);
        }
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, e);
        Ok(true)
    }

    /// The owned endpoint `name` in `network`, if any.
    pub fn endpoint(&self, network: &str, name: &str) -> Option<Endpoint> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&keys::endpoint(network, name))
            .cloned()
    }

    /// Records a state another writer (the health checker) put into the
    /// store, so a re-registration writes it back as it is, not as it was.
    pub fn note_state(&self, network: &str, name: &str, state: crate::model::EndpointState) {
        if let Some(e) = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&keys::endpoint(network, name))
        {
            e.state = state;
        }
    }

    /// Forgets an owned endpoint and deletes it.
    pub async fn remove_endpoint(
        &self,
        store: &dyn Store,
        network: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let key = keys::endpoint(network, name);
        let mine = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let Some(mine) = mine else {
            return Ok(());
        };
        // Only this node's entry: the name may have gone to another node
        // while this one was away, and that entry is not ours to delete.
        for _ in 0..5 {
            let (entries, _) = store.range(&key).await?;
            let Some(entry) = entries.into_iter().find(|e| e.key == key) else {
                return Ok(());
            };
            let owner = serde_json::from_slice::<Endpoint>(&entry.value).map(|e| e.node);
            if owner.is_ok_and(|n| n != mine.node) {
                return Ok(());
            }
            if store.delete_if(&key, entry.mod_revision).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes back owned endpoints missing from `snap` (deleted by
    /// mistake, or lost with an old lease): the store must hold what this
    /// node runs. Names another node holds meanwhile are left to it. An
    /// endpoint claimed after `snap` was read is missing from it but not
    /// from the store, and is left alone.
    pub async fn reassert_missing(
        &self,
        store: &dyn Store,
        snap: &crate::model::Snapshot,
    ) -> Result<(), StoreError> {
        let lease = self.lease();
        if lease == 0 {
            return Ok(());
        }
        let missing: Vec<Endpoint> = self
            .endpoints()
            .into_iter()
            .filter(|e| {
                !snap
                    .endpoints
                    .contains_key(&(e.network.clone(), e.name.clone()))
            })
            .collect();
        for e in missing {
            let (name, network) = (e.name.clone(), e.network.clone());
            if self.reassert(store, e, lease).await? {
                tracing::warn!(endpoint = %name, %network, "this node's endpoint was missing from the store; wrote it back");
            }
        }
        Ok(())
    }
}

/// Keeps the lease alive until `stop` turns true; re-registers when the
/// lease is gone, and retries with backoff while the store is away. The
/// data plane never waits for this loop.
pub async fn keep_alive(
    store: Arc<dyn Store>,
    owned: Arc<Owned>,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let period = ttl / 3;
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = match owned.lease() {
            0 => owned.register(store.as_ref(), ttl).await.map(|_| ()),
            lease => match store.keep_alive(lease).await {
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::warn!(
                        "lease lost; registering again and re-asserting this node's entries"
                    );
                    owned.register(store.as_ref(), ttl).await.map(|_| ())
                }
                other => other,
            },
        };
        let wait = match result {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                period
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "store unreachable; traffic keeps flowing on the last state");
                let w = backoff;
                backoff = (backoff * 2).min(period.max(Duration::from_millis(100)));
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EndpointState;
    use crate::store::embedded::EmbeddedStore;

    fn node() -> Node {
        Node {
            name: "n1".into(),
            advertise: "198.18.0.1".parse().unwrap(),
            lb_addresses: BTreeMap::new(),
        }
    }

    fn ep(name: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            network: "front".into(),
            service: Some("web".into()),
            node: "n1".into(),
            ip: "10.77.0.11".parse().unwrap(),
            weight: 1,
            state: EndpointState::Healthy,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_is_replaced_and_everything_reasserted() {
        let store = EmbeddedStore::ephemeral();
        let owned = Owned::new(node());
        let ttl = Duration::from_secs(3);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(keep_alive(store.clone(), owned.clone(), ttl, stop));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let first = owned.lease();
        assert_ne!(first, 0);
        owned
            .set_endpoint(store.as_ref(), ep("web.1"))
            .await
            .unwrap();
        // Renewed in time, the lease holds well past its TTL.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(owned.lease(), first);
        assert_eq!(store.range("ep/").await.unwrap().0.len(), 1);
        // The lease disappears (as after a long store outage): entries go...
        store.revoke(first).await.unwrap();
        assert!(store.range("").await.unwrap().0.is_empty());
        // ...and come back on a new lease at the next renewal.
        tokio::time::sleep(ttl).await;
        let second = owned.lease();
        assert_ne!(second, first);
        let (entries, _) = store.range("").await.unwrap();
        let keys: Vec<_> = entries.iter().map(|e| (e.key.as_str(), e.lease)).collect();
        assert_eq!(keys, [("ep/front/web.1", second), ("node/n1", second)]);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn removed_endpoints_stay_removed_after_reregistering() {
        let store = EmbeddedStore::ephemeral();
        let owned = Owned::new(node());
        owned
            .register(store.as_ref(), Duration::from_secs(30))
            .await
            .unwrap();
        owned
            .set_endpoint(store.as_ref(), ep("web.1"))
            .await
            .unwrap();
        owned
            .set_endpoint(store.as_ref(), ep("web.2"))
            .await
            .unwrap();
        owned
            .remove_endpoint(store.as_ref(), "front", "web.1")
            .await
            .unwrap();
        owned
            .register(store.as_ref(), Duration::from_secs(30))
            .await
            .unwrap();
        let (entries, _) = store.range("ep/").await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["ep/front/web.2"]
        );
    }

    #[tokio::test]
    async fn a_name_taken_while_away_is_left_to_its_new_owner() {
        let store = EmbeddedStore::ephemeral();
        let owned = Owned::new(node());
        owned
            .register(store.as_ref(), Duration::from_secs(30))
            .await
            .unwrap();
        owned
            .set_endpoint(store.as_ref(), ep("web.1"))
            .await
            .unwrap();
        // This node's lease ends; another node starts web.1.
        store.revoke(owned.lease()).await.unwrap();
        let mut other = ep("web.1");
        other.node = "n2".into();
        other.ip = "10.77.0.99".parse().unwrap();
        store
            .put("ep/front/web.1", serde_json::to_vec(&other).unwrap(), 0)
            .await
            .unwrap();
        // Back: n1 re-registers and leaves n2's web.1 alone.
        owned
            .register(store.as_ref(), Duration::from_secs(30))
            .await
            .unwrap();
        let (entries, _) = store.range("ep/").await.unwrap();
        let now: Endpoint = serde_json::from_slice(&entries[0].value).unwrap();
        assert_eq!(now.node, "n2");
        assert!(owned.endpoint("front", "web.1").is_none());
    }

    #[tokio::test]
    async fn an_endpoint_newer_than_the_snapshot_is_not_overwritten() {
        let store = EmbeddedStore::ephemeral();
        let owned = Owned::new(node());
        let first = owned
            .register(store.as_ref(), Duration::from_secs(30))
            .await
            .unwrap();
        let mut starting = ep("web.1");
        starting.state = EndpointState::Starting;
        assert!(owned
            .claim_endpoint(store.as_ref(), starting)
            .await
            .unwrap());
        // The checker marks it healthy; a reconcile of a snapshot read
        // before the claim finds it missing.
        let healthy = serde_json::to_vec(&ep("web.1")).unwrap();
        store.put("ep/front/web.1", healthy, first).await.unwrap();
        let (_, rev) = store.range("ep/").await.unwrap();
        owned
            .reassert_missing(store.as_ref(), &crate::model::Snapshot::default())
            .await
            .unwrap();
        let (entries, now) = store.range("ep/").await.unwrap();
        assert_eq!(now, rev, "nothing written");
        let stored: Endpoint = serde_json::from_slice(&entries[0].value).unwrap();
        assert_eq!(stored.state, EndpointState::Healthy);
        // On a new lease (an agent restart), the stored entry moves over
        // as it is.
        let second = store.grant(Duration::from_secs(30)).await.unwrap();
        let mut stale = ep("web.1");
        stale.state = EndpointState::Starting;
        assert!(owned.reassert(store.as_ref(), stale, second).await.unwrap());
        let (entries, _) = store.range("ep/").await.unwrap();
        assert_eq!(entries[0].lease, second);
        let stored: Endpoint = serde_json::from_slice(&entries[0].value).unwrap();
        assert_eq!(stored.state, EndpointState::Healthy);
    }
}
