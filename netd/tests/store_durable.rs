//! The embedded store on disk: an older agent's `store.json` carried over
//! once, and a log cut at random bytes (what a power cut in the middle of
//! a write leaves) opened at exactly the last complete commit, saying what
//! it dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use shoal_netd::store::embedded::disk::{Disk, DB_FILE};
use shoal_netd::store::embedded::EmbeddedStore;
use shoal_netd::store::{Revision, Store};

/// A directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shoal-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-json-v0.json"
);

/// Every entry as (value, mod_revision, lease), by key.
type Contents = BTreeMap<String, (Vec<u8>, Revision, i64)>;

async fn contents(s: &dyn Store) -> (Contents, Revision) {
    let (entries, rev) = s.range("").await.unwrap();
    let map = entries
        .into_iter()
        .map(|e| (e.key, (e.value, e.mod_revision, e.lease)))
        .collect();
    (map, rev)
}

#[tokio::test]
async fn a_store_json_of_an_older_agent_is_carried_over_once() {
    let dir = TempDir::new("migrate");
    std::fs::copy(FIXTURE, dir.0.join("store.json")).unwrap();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
    let want: Contents = saved["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            let key = e["key"].as_str().unwrap().to_string();
            let rev = e["mod_revision"].as_i64().unwrap();
            (key, (value, rev, e["lease"].as_i64().unwrap()))
        })
        .collect();
    assert!(want.contains_key("net/front") && want.contains_key("svc/web"));
    let revision = saved["revision"].as_i64().unwrap();

    let s = EmbeddedStore::open(&dir.0).unwrap();
    assert_eq!(contents(s.as_ref()).await, (want.clone(), revision));
    assert!(!dir.0.join("store.json").exists());
    assert!(dir.0.join("store.json.migrated").exists());
    // The lease came with its key: keeping it alive works, revoking takes
    // the node's entry.
    let lease = want["node/fx"].2;
    s.keep_alive(lease).await.unwrap();
    let next = s.put("net/more", b"x".to_vec(), 0).await.unwrap();
    assert_eq!(next, revision + 1, "revisions carry on from the file's");
    drop(s);

    // Opened again: from the database, the old file not read again even
    // if it came back, and kept aside rather than lost.
    std::fs::copy(FIXTURE, dir.0.join("store.json")).unwrap();
    let s = EmbeddedStore::open(&dir.0).unwrap();
    assert!(!dir.0.join("store.json").exists());
    let kept = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .any(|n| n.starts_with("store.json.not-imported."));
    assert!(kept, "the file not imported is kept aside");
    let (now, rev) = contents(s.as_ref()).await;
    assert_eq!(rev, revision + 1);
    assert_eq!(now.len(), want.len() + 1);
    s.revoke(lease).await.unwrap();
    assert!(!contents(s.as_ref()).await.0.contains_key("node/fx"));
}

#[tokio::test]
async fn a_store_json_that_is_not_one_is_refused_by_name() {
    let dir = TempDir::new("badjson");
    std::fs::write(dir.0.join("store.json"), b"{not json").unwrap();
    let err = EmbeddedStore::open(&dir.0).unwrap_err();
    assert!(
        err.to_string().contains("store.json is not a shoal store"),
        "{err}"
    );
    assert!(dir.0.join("store.json").exists(), "a refused file stays");
}

/// Copies what is on disk now (the database and its log), as a crash at
/// this instant would leave it.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
        if from.join(&f).exists() {
            std::fs::copy(from.join(&f), to.join(&f)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_log_cut_at_any_byte_opens_at_the_last_complete_commit() {
    let dir = TempDir::new("torn");
    let live = dir.0.join("live");
    let s = EmbeddedStore::open(&live).unwrap();
    // The contents after each acknowledged write, by revision; a lease's
    // end deletes three keys in one commit, so no state in between exists.
    let mut after: BTreeMap<Revision, Contents> = BTreeMap::new();
    after.insert(0, Contents::new());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(23);
    for round in 0..12 {
        let lease = s.grant(Duration::from_secs(600)).await.unwrap();
        for k in 0..3 {
            s.put(&format!("held/{round}/{k}"), vec![k; 300], lease)
                .await
                .unwrap();
            let (c, r) = contents(s.as_ref()).await;
            after.insert(r, c);
        }
        for _ in 0..4 {
            let key = format!("k/{}", rng.gen_range(0..6));
            let value: Vec<u8> = (0..rng.gen_range(1..2000)).map(|_| rng.gen()).collect();
            s.put(&key, value, 0).await.unwrap();
            let (c, r) = contents(s.as_ref()).await;
            after.insert(r, c);
        }
        s.delete(&format!("k/{}", rng.gen_range(0..6)))
            .await
            .unwrap();
        let (c, r) = contents(s.as_ref()).await;
        after.insert(r, c);
        s.revoke(lease).await.unwrap();
        let (c, r) = contents(s.as_ref()).await;
        after.insert(r, c);
    }
    let last = *after.keys().last().unwrap();
    let crashed = dir.0.join("crashed");
    crash_copy(&live, &crashed);
    let wal = crashed.join(format!("{DB_FILE}-wal"));
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    assert!(
        wal_len > 32 * 1024,
        "the log holds the writes ({wal_len} bytes)"
    );

    // Whole: every acknowledged write.
    let (_, whole) = Disk::open(&crashed).unwrap();
    assert_eq!((whole.revision, whole.torn_bytes), (last, 0));

    let mut cuts = 0;
    let mut torn_seen = 0;
    for trial in 0..40 {
        let cut = dir.0.join(format!("cut{trial}"));
        crash_copy(&live, &cut);
        let at = rng.gen_range(0..wal_len);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(cut.join(format!("{DB_FILE}-wal")))
            .unwrap();
        f.set_len(at).unwrap();
        drop(f);
        let (_, loaded) = Disk::open(&cut).unwrap_or_else(|e| panic!("cut at {at}: {e}"));
        let store = EmbeddedStore::open(&cut).unwrap();
        let (now, rev) = contents(store.as_ref()).await;
        assert_eq!(rev, loaded.revision);
        let want = after
            .get(&rev)
            .unwrap_or_else(|| panic!("cut at {at}: revision {rev} is inside a commit"));
        assert_eq!(&now, want, "cut at {at}: the contents at revision {rev}");
        assert!(rev <= last);
        // A cut inside a frame leaves bytes past the last commit: said.
        if loaded.torn_bytes > 0 {
            torn_seen += 1;
        }
        // It works on from there.
        let r = store.put("after/crash", b"x".to_vec(), 0).await.unwrap();
        assert_eq!(r, rev + 1);
        drop(store);
        std::fs::remove_dir_all(&cut).unwrap();
        cuts += 1;
    }
    assert_eq!(cuts, 40);
    assert!(
        torn_seen > 30,
        "most random cuts fall inside a frame: {torn_seen} of 40 said so"
    );
}
