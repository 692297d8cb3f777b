//! One conformance suite, run against the embedded store and a real etcd
//! (started per test on loopback ports, stopped and removed on drop).

use std::sync::Arc;
use std::time::Duration;

use shoal_netd::store::embedded::EmbeddedStore;
use shoal_netd::store::etcd::EtcdStore;
use shoal_netd::store::{Event, Store, StoreError, Watch, WatchItem};
use shoal_tests::etcd::Etcd;

/// The netd store of a test etcd (retrying while it starts).
async fn etcd_store(etcd: &Etcd) -> Arc<dyn Store> {
    for _ in 0..100 {
        if let Ok(s) = EtcdStore::connect(
            &[etcd.client_url().to_string()],
            "/shoal-test/",
            Duration::from_secs(1),
        )
        .await
        {
            return Arc::new(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("etcd did not come up at {}", etcd.client_url());
}

/// A directory under the temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shoal-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn next(w: &mut Watch) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("a watch item in time")
        .expect("watch open")
}

/// Collects `n` events from a watch.
async fn events(w: &mut Watch, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(w).await {
            WatchItem::Events(e) => out.extend(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

async fn put_get_delete_and_revisions(s: Arc<dyn Store>) {
    let r1 = s.put("net/a", b"1".to_vec(), 0).await.unwrap();
    let r2 = s.put("net/b", b"2".to_vec(), 0).await.unwrap();
    s.put("other/c", b"3".to_vec(), 0).await.unwrap();
    assert!(r2 > r1);
    let (entries, rev) = s.range("net/").await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["net/a", "net/b"]
    );
    assert_eq!(entries[0].mod_revision, r1);
    assert!(rev >= r2);
    let r3 = s.delete("net/a").await.unwrap();
    assert!(r3 > r2);
    assert_eq!(s.range("net/").await.unwrap().0.len(), 1);
}

async fn compare_and_swap(s: Arc<dyn Store>) {
    // Create if absent: only the first wins.
    assert!(s.put_if("vni/4096", 0, b"front".to_vec(), 0).await.unwrap());
    assert!(!s.put_if("vni/4096", 0, b"back".to_vec(), 0).await.unwrap());
    let rev = s.range("vni/4096").await.unwrap().0[0].mod_revision;
    // Update at the right revision, then a stale one fails.
    assert!(s
        .put_if("vni/4096", rev, b"front2".to_vec(), 0)
        .await
        .unwrap());
    assert!(!s
        .put_if("vni/4096", rev, b"front3".to_vec(), 0)
        .await
        .unwrap());
    assert!(!s.delete_if("vni/4096", rev).await.unwrap());
    let rev2 = s.range("vni/4096").await.unwrap().0[0].mod_revision;
    assert!(s.delete_if("vni/4096", rev2).await.unwrap());
    assert!(s.range("vni/").await.unwrap().0.is_empty());
}

async fn leases_take_their_entries_with_them(s: Arc<dyn Store>) {
    let lease = s.grant(Duration::from_secs(2)).await.unwrap();
    s.put("node/n1", b"up".to_vec(), lease).await.unwrap();
    s.put("ep/n1/web.1", b"10.0.0.2".to_vec(), lease)
        .await
        .unwrap();
    s.put("net/front", b"kept".to_vec(), 0).await.unwrap();
    let (_, rev) = s.range("").await.unwrap();
    let mut w = s.watch("ep/", rev + 1).await.unwrap();
    // Kept alive past its TTL, the entries stay.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        s.keep_alive(lease).await.unwrap();
    }
    assert_eq!(s.range("node/").await.unwrap().0.len(), 1);
    // Left alone, it expires and its entries go; watchers see the delete.
    let t = std::time::Instant::now();
    let got = events(&mut w, 1).await;
    assert!(
        matches!(&got[0], Event::Delete { key, .. } if key == "ep/n1/web.1"),
        "{got:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(8));
    assert!(s.range("node/").await.unwrap().0.is_empty());
    assert_eq!(s.range("net/").await.unwrap().0.len(), 1);
    let ka = s.keep_alive(lease).await;
    assert!(matches!(ka, Err(StoreError::LeaseNotFound(_))), "{ka:?}");
    assert!(matches!(
        s.put("x", vec![], lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // Revoking ends a lease at once.
    let l2 = s.grant(Duration::from_secs(30)).await.unwrap();
    s.put("node/n2", b"up".to_vec(), l2).await.unwrap();
    s.revoke(l2).await.unwrap();
    assert!(s.range("node/").await.unwrap().0.is_empty());
}

async fn watches_replay_from_a_revision_then_follow(s: Arc<dyn Store>) {
    let r1 = s.put("svc/web", b"1".to_vec(), 0).await.unwrap();
    s.put("svc/api", b"1".to_vec(), 0).await.unwrap();
    s.put("net/x", b"1".to_vec(), 0).await.unwrap();
    let mut w = s.watch("svc/", r1).await.unwrap();
    let past = events(&mut w, 2).await;
    assert!(matches!(&past[0], Event::Put(e) if e.key == "svc/web" && e.mod_revision == r1));
    assert!(matches!(&past[1], Event::Put(e) if e.key == "svc/api"));
    s.delete("svc/web").await.unwrap();
    s.put("net/y", b"1".to_vec(), 0).await.unwrap();
    s.put("svc/db", b"1".to_vec(), 0).await.unwrap();
    let live = events(&mut w, 2).await;
    assert!(matches!(&live[0], Event::Delete { key, .. } if key == "svc/web"));
    assert!(matches!(&live[1], Event::Put(e) if e.key == "svc/db"));
    assert!(live[0].revision() < live[1].revision());
}

async fn a_compacted_start_asks_for_a_resync(s: Arc<dyn Store>) {
    let r1 = s.put("k/a", b"1".to_vec(), 0).await.unwrap();
    let r2 = s.put("k/a", b"2".to_vec(), 0).await.unwrap();
    let r3 = s.put("k/a", b"3".to_vec(), 0).await.unwrap();
    s.compact(r3).await.unwrap();
    let mut w = s.watch("k/", r1).await.unwrap();
    let item = next(&mut w).await;
    assert!(
        matches!(item, WatchItem::Compacted { current } if current >= r3),
        "{item:?}"
    );
    // From the compaction point on, history is there.
    let mut w = s.watch("k/", r3).await.unwrap();
    assert!(matches!(&events(&mut w, 1).await[0], Event::Put(e) if e.value == b"3"));
    let _ = r2;
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(EmbeddedStore::ephemeral()).await;
                }
            )*
        }
        mod embedded_on_disk {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = TempDir::new(stringify!($name));
                    super::$name(EmbeddedStore::open(&dir.0).unwrap()).await;
                }
            )*
        }
        mod etcd {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let etcd = Etcd::start();
                    super::$name(etcd_store(&etcd).await).await;
                }
            )*
        }
    };
}

suite!(
    put_get_delete_and_revisions,
    compare_and_swap,
    leases_take_their_entries_with_them,
    watches_replay_from_a_revision_then_follow,
    a_compacted_start_asks_for_a_resync
);

#[tokio::test]
async fn the_embedded_store_survives_a_restart() {
    let dir = TempDir::new("restart");
    let rev = {
        let s = EmbeddedStore::open(&dir.0).unwrap();
        let lease = s.grant(Duration::from_secs(60)).await.unwrap();
        s.put("net/front", b"10.77.0.0/24".to_vec(), 0)
            .await
            .unwrap();
        s.put("node/n1", b"up".to_vec(), lease).await.unwrap()
    };
    let s = EmbeddedStore::open(&dir.0).unwrap();
    let (entries, now) = s.range("").await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(now, rev, "the revision carries on");
    // The lease came back with its keys.
    let lease = entries.iter().find(|e| e.key == "node/n1").unwrap().lease;
    s.keep_alive(lease).await.unwrap();
    assert!(s.put("net/back", vec![], 0).await.unwrap() > rev);
    // History from before the restart is gone: a watch from there resyncs.
    let mut w = s.watch("", 1).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchItem::Compacted { .. }));
}
