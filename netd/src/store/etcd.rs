//! The etcd v3 backend. Keys live under a prefix (`/shoal/` by default) so
//! one etcd can hold other data too. Watches map etcd's events one for one;
//! a watch canceled for compaction becomes [`WatchItem::Compacted`], and a
//! broken stream closes the channel so the caller re-reads.
//!
//! One client per member, and every request goes to the member in use;
//! when that member cannot be reached the store moves on to the next one,
//! and a request that never left (its connection failed) is sent there at
//! once if its time allows. etcd-client's own multi-endpoint channel keeps
//! handing a share of requests to a dead member (etcdv3/etcd-client#39),
//! so with one of three members down a third of all requests failed.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// One client per member, in the order given.
    clients: Arc<[Client]>,
    /// The member in use (an index into `clients`).
    current: Arc<AtomicUsize>,
    /// How long one request may take, moves to other members included.
    timeout: Duration,
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

/// gRPC status codes (fixed by the gRPC spec) of a member not reached:
/// CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE.
const NOT_REACHED: [i32; 3] = [1, 4, 14];

/// Whether `e` says the member could not be talked to (as opposed to an
/// answer from it): a transport failure under a gRPC status.
fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            NOT_REACHED.contains(&i32::from(s.code())) && std::error::Error::source(s).is_some()
        }
        _ => false,
    }
}

/// Whether `e` is a failed connect: the request was never sent, so sending
/// it to another member cannot apply it twice.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            unreachable(e) && s.message().contains("connect error")
        }
        _ => false,
    }
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
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoint".into()));
        }
        // Clients connect lazily: a member that is down now costs nothing.
        let mut clients = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            clients.push(
                Client::connect([ep], Some(opts.clone()))
                    .await
                    .map_err(unavailable)?,
            );
        }
        let store = EtcdStore {
            clients: clients.into(),
            current: Arc::new(AtomicUsize::new(0)),
            timeout,
            root: root.to_string(),
        };
        // Fail now, not at the first use, when nothing answers; start with
        // the first member that does.
        let mut last = None;
        for (i, c) in store.clients.iter().enumerate() {
            match c.clone().status().await {
                Ok(_) => {
                    store.current.store(i, Ordering::Relaxed);
                    return Ok(store);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || StoreError::Invalid("no etcd endpoint".into()),
            unavailable,
        ))
    }

    /// Runs `op` on the member in use; moves on to the next member when
    /// that one is unreachable, and sends a request that never left there
    /// at once if it failed fast (each member tried at most once): a
    /// refused connection costs nothing, but a node cut off from every
    /// member must not wait a connect timeout per member.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let started = tokio::time::Instant::now();
        let mut at = self.current.load(Ordering::Relaxed) % n;
        let mut tried = 1;
        loop {
            let result = op(self.clients[at].clone()).await;
            let Err(e) = &result else { return result };
            if !unreachable(e) {
                return result;
            }
            let next = (at + 1) % n;
            // Unless another request already moved on.
            let _ = self
                .current
                .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed);
            if !never_sent(e) || tried >= n || started.elapsed() >= self.timeout / 2 {
                return result;
            }
            tracing::debug!(error = %e, "etcd member unreachable; trying the next one");
            at = next;
            tried += 1;
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let key = self.root.clone();
        let resp = self
            .call(|mut c| {
                let key = key.clone();
                async move {
                    let opts = GetOptions::new().with_prefix().with_count_only();
                    c.get(key, Some(opts)).await
                }
            })
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
        let key = self.full(prefix);
        let resp = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(unavailable)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().map(|kv| self.entry(kv)).collect(), rev))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        let key = self.full(key);
        let resp = self
            .call(|mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, Self::put_options(lease)).await }
            })
            .await
            .map_err(|e| Self::lease_error(lease, e))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(&self, key: &str) -> Result<Revision, StoreError> {
        let key = self.full(key);
        let resp = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.delete(key, None::<DeleteOptions>).await }
            })
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
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
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
        let resp = self
            .call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(unavailable)?;
        Ok(resp.succeeded())
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs_f64().ceil() as i64;
        if secs <= 0 {
            return Err(StoreError::Invalid("lease TTL must be above 0".into()));
        }
        let resp = self
            .call(|mut c| async move { c.lease_grant(secs, None).await })
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let ttl = self
            .call(|mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |r| r.ttl()))
            })
            .await
            .map_err(|e| Self::lease_error(lease, e))?;
        if ttl > 0 {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.lease_revoke(lease).await })
            .await
            .map(|_| ())
            .map_err(|e| Self::lease_error(lease, e))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let key = self.full(prefix);
        let mut stream = self
            .call(|mut c| {
                let key = key.clone();
                async move {
                    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
                    c.watch(key, Some(opts)).await
                }
            })
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
        self.call(|mut c| async move { c.compact(revision, None).await })
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
