//! The etcd v3 backend. Keys live under a prefix (`/shoal/` by default) so
//! one etcd can hold other data too. Watches map etcd's events one for one;
//! a watch canceled for compaction becomes [`WatchItem::Compacted`], and a
//! broken stream closes the channel so the caller re-reads.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::{Entry, Event, LeaseId, Revision, Store, StoreError, Watch, WatchItem};

/// Where shoal's keys live in etcd.
pub const DEFAULT_ROOT: &str = "/shoal/";

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    root: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` into client endpoints.
pub fn parse_url(url: &str) -> Result<Vec<String>, StoreError> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        StoreError::Invalid(format!(
            "store `{url}`: expected etcd://HOST:PORT[,HOST:PORT...]"
        ))
    })?;
    let eps: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|hp| format!("http://{hp}"))
        .collect();
    if eps.is_empty() || rest.split(',').any(|hp| !hp.trim().contains(':')) {
        return Err(StoreError::Invalid(format!(
            "store `{url}`: every endpoint needs HOST:PORT"
        )));
    }
    Ok(eps)
}

impl EtcdStore {
    /// Connects to `endpoints` (each `http://HOST:PORT`), keys under `root`.
    pub async fn connect(
        endpoints: &[String],
        root: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(unavailable)?;
        let store = EtcdStore {
            client,
            root: root.to_string(),
        };
        // Fail now, not at the first use, when nothing answers.
        store.client.clone().status().await.map_err(unavailable)?;
        Ok(store)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let opts = GetOptions::new().with_prefix().with_count_only();
        let resp = self
            .client
            .clone()
            .get(self.root.clone(), Some(opts))
            .await
            .map_err(unavailable)?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn entry(&self, kv: &etcd_client::KeyValue) -> Entry {
        let key = String::from_utf8_lossy(kv.key());
        Entry {
            key: key.strip_prefix(&self.root).unwrap_or(&key).to_string(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }

    fn put_options(lease: LeaseId) -> Option<PutOptions> {
        (lease != 0).then(|| PutOptions::new().with_lease(lease))
    }

    fn lease_error(lease: LeaseId, e: etcd_client::Error) -> StoreError {
        if e.to_string().contains("lease not found") {
            StoreError::LeaseNotFound(lease)
        } else {
            unavailable(e)
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, prefix: &str) -> Result<(Vec<Entry>, Revision), StoreError> {
        let resp = self
            .client
            .clone()
            .get(self.full(prefix), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().map(|kv| self.entry(kv)).collect(), rev))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        let resp = self
            .client
            .clone()
            .put(self.full(key), value, Self::put_options(lease))
            .await
            .map_err(|e| Self::lease_error(lease, e))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(&self, key: &str) -> Result<Revision, StoreError> {
        let resp = self
            .client
            .clone()
            .delete(self.full(key), None::<DeleteOptions>)
            .await
            .map_err(unavailable)?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn put_if(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<bool, StoreError> {
        let k = self.full(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, expected)])
            .and_then([TxnOp::put(k, value, Self::put_options(lease))]);
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| Self::lease_error(lease, e))?;
        Ok(resp.succeeded())
    }

    async fn delete_if(&self, key: &str, expected: Revision) -> Result<bool, StoreError> {
        if expected == 0 {
            return Ok(false);
        }
        let k = self.full(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(k, None)]);
        let resp = self.client.clone().txn(txn).await.map_err(unavailable)?;
        Ok(resp.succeeded())
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs_f64().ceil() as i64;
        if secs <= 0 {
            return Err(StoreError::Invalid("lease TTL must be above 0".into()));
        }
        let resp = self
            .client
            .clone()
            .lease_grant(secs, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let (mut keeper, mut stream) = self
            .client
            .clone()
            .lease_keep_alive(lease)
            .await
            .map_err(|e| Self::lease_error(lease, e))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| Self::lease_error(lease, e))?;
        match stream
            .message()
            .await
            .map_err(|e| Self::lease_error(lease, e))?
        {
            Some(resp) if resp.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.client
            .clone()
            .lease_revoke(lease)
            .await
            .map(|_| ())
            .map_err(|e| Self::lease_error(lease, e))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut client = self.client.clone();
        let mut stream = client
            .watch(self.full(prefix), Some(opts))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    // The stream broke: closing the channel tells the caller.
                    _ => return,
                };
                if msg.canceled() {
                    if msg.compact_revision() > 0 {
                        // A canceled response carries no header: ask.
                        let Ok(current) = me.current_revision().await else {
                            return;
                        };
                        let _ = tx.send(WatchItem::Compacted { current });
                    }
                    return;
                }
                let events: Vec<Event> = msg
                    .events()
                    .iter()
                    .filter_map(|ev| {
                        let kv = ev.kv()?;
                        Some(match ev.event_type() {
                            EventType::Put => Event::Put(me.entry(kv)),
                            EventType::Delete => Event::Delete {
                                key: me.entry(kv).key,
                                revision: kv.mod_revision(),
                            },
                        })
                    })
                    .collect();
                if !events.is_empty() && tx.send(WatchItem::Events(events)).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.client
            .clone()
            .compact(revision, None)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_url("etcd://10.0.0.1:2379").unwrap(),
            ["http://10.0.0.1:2379"]
        );
        assert_eq!(
            parse_url("etcd://a:1,b:2").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert!(parse_url("http://a:1").is_err());
        assert!(parse_url("etcd://").is_err());
        assert!(parse_url("etcd://a,b:2").is_err());
    }
}
