//! Following the store: a [`Snapshot`] kept current from a full read plus a
//! watch from the revision after it. A compacted history or a broken watch
//! means: read everything again and watch from there (resync), so a missed
//! event can never leave stale state. While the store is unreachable the
//! last snapshot stays published: the data plane keeps forwarding on it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::model::Snapshot;
use crate::store::{Event, Store, WatchItem};

/// Publishes snapshots on `tx` until `stop` turns true.
pub async fn follow(
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let synced = async {
            let (entries, rev) = store.range("").await?;
            let mut snap = Snapshot::from_entries(&entries, rev);
            tx.send_replace(Arc::new(snap.clone()));
            let mut w = store.watch("", rev + 1).await?;
            tracing::debug!(revision = rev, "following the store");
            while let Some(item) = w.recv().await {
                match item {
                    WatchItem::Events(events) => {
                        for e in &events {
                            match e {
                                Event::Put(entry) => snap.apply_put(entry),
                                Event::Delete { key, revision } => {
                                    snap.apply_delete(key, *revision)
                                }
                            }
                        }
                        tx.send_replace(Arc::new(snap.clone()));
                    }
                    WatchItem::Compacted { .. } => {
                        tracing::info!("watch history compacted; reading the store again");
                        return Ok::<bool, crate::store::StoreError>(true);
                    }
                }
            }
            Ok(false)
        };
        let wait = tokio::select! {
            r = synced => match r {
                Ok(true) => Duration::ZERO,
                Ok(false) => {
                    tracing::warn!("store watch ended; resyncing");
                    backoff
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "store unreachable; keeping the last snapshot");
                    backoff
                }
            },
            _ = stop.changed() => return,
        };
        if wait > Duration::ZERO {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    async fn until(
        rx: &mut watch::Receiver<Arc<Snapshot>>,
        f: impl Fn(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let s = rx.borrow_and_update().clone();
                if f(&s) {
                    return s;
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("snapshot in time")
    }

    const NET: &str =
        r#"{"name":"front","subnet":"10.77.0.0/24","gateway":"10.77.0.1","vni":4096}"#;
    const NODE: &str = r#"{"name":"n1","advertise":"198.18.0.1"}"#;

    #[tokio::test]
    async fn snapshots_follow_puts_deletes_and_compaction() {
        let store = EmbeddedStore::ephemeral();
        store
            .put("net/front", NET.as_bytes().to_vec(), 0)
            .await
            .unwrap();
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(store.clone(), tx, stop));
        until(&mut rx, |s| s.networks.contains_key("front")).await;
        store
            .put("node/n1", NODE.as_bytes().to_vec(), 0)
            .await
            .unwrap();
        until(&mut rx, |s| s.nodes.contains_key("n1")).await;
        store.delete("net/front").await.unwrap();
        let s = until(&mut rx, |s| s.networks.is_empty()).await;
        assert!(s.nodes.contains_key("n1"));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// The real embedded store, with faults on demand: the next `range`
    /// calls fail, and watches end at once.
    struct Faulty {
        inner: Arc<EmbeddedStore>,
        failing_reads: std::sync::atomic::AtomicU32,
        broken_watches: std::sync::atomic::AtomicBool,
        cut: Arc<tokio::sync::Notify>,
    }

    impl Faulty {
        /// Ends every open watch and refuses new ones.
        fn break_watches(&self) {
            self.broken_watches
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.cut.notify_waiters();
        }
    }

    #[async_trait::async_trait]
    impl Store for Faulty {
        async fn range(&self, p: &str) -> Result<(Vec<crate::store::Entry>, i64), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.failing_reads.load(SeqCst) > 0 {
                self.failing_reads.fetch_sub(1, SeqCst);
                return Err(StoreError::Unavailable("injected".into()));
            }
            self.inner.range(p).await
        }
        async fn put(&self, k: &str, v: Vec<u8>, l: i64) -> Result<i64, StoreError> {
            self.inner.put(k, v, l).await
        }
        async fn delete(&self, k: &str) -> Result<i64, StoreError> {
            self.inner.delete(k).await
        }
        async fn put_if(&self, k: &str, e: i64, v: Vec<u8>, l: i64) -> Result<bool, StoreError> {
            self.inner.put_if(k, e, v, l).await
        }
        async fn delete_if(&self, k: &str, e: i64) -> Result<bool, StoreError> {
            self.inner.delete_if(k, e).await
        }
        async fn grant(&self, t: Duration) -> Result<i64, StoreError> {
            self.inner.grant(t).await
        }
        async fn keep_alive(&self, l: i64) -> Result<(), StoreError> {
            self.inner.keep_alive(l).await
        }
        async fn revoke(&self, l: i64) -> Result<(), StoreError> {
            self.inner.revoke(l).await
        }
        async fn watch(&self, p: &str, from: i64) -> Result<crate::store::Watch, StoreError> {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            if self
                .broken_watches
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                // A watch that ends at once, as when the connection drops.
                return Ok(rx);
            }
            let mut inner = self.inner.watch(p, from).await?;
            let cut = Arc::clone(&self.cut);
            tokio::spawn(async move {
                let cut = cut.notified();
                tokio::pin!(cut);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut cut => return,
                        item = inner.recv() => match item {
                            Some(i) => {
                                if tx.send(i).is_err() {
                                    return;
                                }
                            }
                            None => return,
                        },
                    }
                }
            });
            Ok(rx)
        }
        async fn compact(&self, r: i64) -> Result<(), StoreError> {
            self.inner.compact(r).await
        }
    }

    use crate::store::StoreError;

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_store_keeps_the_last_snapshot_then_resyncs() {
        use std::sync::atomic::Ordering::SeqCst;
        let inner = EmbeddedStore::ephemeral();
        inner
            .put("node/n1", NODE.as_bytes().to_vec(), 0)
            .await
            .unwrap();
        let store = Arc::new(Faulty {
            inner: inner.clone(),
            failing_reads: 3.into(),
            broken_watches: false.into(),
            cut: Arc::new(tokio::sync::Notify::new()),
        });
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(store.clone(), tx, stop));
        // Three failed reads, retried with backoff, then the state arrives.
        until(&mut rx, |s| s.nodes.contains_key("n1")).await;
        assert_eq!(store.failing_reads.load(SeqCst), 0);
        // Now every watch breaks and reads fail for a while: the published
        // snapshot stays what it was...
        store.failing_reads.store(1000, SeqCst);
        store.break_watches();
        inner
            .put("net/front", NET.as_bytes().to_vec(), 0)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(rx.borrow().nodes.contains_key("n1"));
        assert!(!rx.borrow().networks.contains_key("front"));
        // ...and when the store answers again, a full read brings what was
        // missed, even with no watch event for it.
        store.failing_reads.store(0, SeqCst);
        until(&mut rx, |s| s.networks.contains_key("front")).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
