//! The embedded store on disk: one SQLite database, `store.db`, in WAL mode
//! with `synchronous = FULL`, so a commit returns only once its log frames
//! are fsync'd, and a crash at any instant leaves the last complete commit:
//! SQLite's log frames carry a running checksum, and recovery keeps the
//! frames up to the last valid commit frame, never part of a transaction.
//!
//! Tables: `kv` (key, value, mod_revision, lease), `leases` (id, TTL in
//! milliseconds) and `meta` (`revision`, `next_lease`). A batch of changes
//! is one transaction (see `commit.rs`).
//!
//! An older agent kept the store in `store.json`; [`Disk::open`] carries
//! it into a new database once, in one transaction, then renames it
//! `store.json.migrated`. A `store.json` found beside a database already
//! in use is not imported: it is renamed `store.json.not-imported.<time>`
//! with a warning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Deserialize;

use super::state::Change;
use crate::store::{Entry, LeaseId, Revision, StoreError};

/// The database's file name in the store's directory.
pub const DB_FILE: &str = "store.db";
/// The file an older agent kept the store in.
pub const JSON_FILE: &str = "store.json";

/// The open database; used by one thread at a time.
pub struct Disk {
    conn: Connection,
    path: PathBuf,
}

/// What the database held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The revision of the last write.
    pub revision: Revision,
    /// The last lease id handed out.
    pub next_lease: LeaseId,
    /// Every entry.
    pub entries: Vec<Entry>,
    /// Every lease and its TTL.
    pub leases: Vec<(LeaseId, Duration)>,
    /// Bytes at the end of the log past its last complete commit: a write
    /// a crash cut short (never acknowledged), dropped by recovery.
    pub torn_bytes: u64,
    /// Entries carried over from `store.json`, when this open did that.
    pub migrated: Option<usize>,
}

/// `store.json` as older agents wrote it.
#[derive(Deserialize)]
struct Saved {
    revision: Revision,
    next_lease: LeaseId,
    entries: Vec<Entry>,
    /// Lease id and TTL in milliseconds.
    leases: Vec<(LeaseId, u64)>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    mod_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY NOT NULL, ttl_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
";

fn files(path: &Path) -> impl Fn(String) -> StoreError + '_ {
    move |why| StoreError::Files {
        path: path.display().to_string(),
        why,
    }
}

impl Disk {
    /// Opens (or creates) the store's database in `dir` and reads it whole.
    pub fn open(dir: &Path) -> Result<(Disk, Loaded), StoreError> {
        let err = files(dir);
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let path = dir.join(DB_FILE);
        let wal = dir.join(format!("{DB_FILE}-wal"));
        let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        let sql = |e: rusqlite::Error| files(&path)(e.to_string());
        let conn = Connection::open(&path).map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(files(&path)(format!(
                "cannot use a write-ahead log (journal mode {mode})"
            )));
        }
        // FULL: the log is fsync'd at every commit (NORMAL would not).
        // A log reset after a checkpoint is cut back to nothing, so bytes
        // past the last commit can only be a write cut short.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 0;")
            .map_err(sql)?;
        let torn_bytes = torn_tail(&conn, wal_len).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let mut disk = Disk {
            conn,
            path: path.clone(),
        };
        let migrated = disk.migrate(dir)?;
        let mut loaded = disk.load().map_err(sql)?;
        loaded.torn_bytes = torn_bytes;
        loaded.migrated = migrated;
        Ok((disk, loaded))
    }

    fn meta(&self, name: &str) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
    }

    fn load(&self) -> rusqlite::Result<Loaded> {
        let mut kv = self
            .conn
            .prepare("SELECT key, value, mod_revision, lease FROM kv")?;
        let entries = kv
            .query_map([], |r| {
                Ok(Entry {
                    key: r.get(0)?,
                    value: r.get(1)?,
                    mod_revision: r.get(2)?,
                    lease: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut l = self.conn.prepare("SELECT id, ttl_ms FROM leases")?;
        let leases = l
            .query_map([], |r| {
                let ms: i64 = r.get(1)?;
                Ok((r.get(0)?, Duration::from_millis(ms.max(0) as u64)))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Loaded {
            revision: self.meta("revision")?.unwrap_or(0),
            next_lease: self.meta("next_lease")?.unwrap_or(0),
            entries,
            leases,
            ..Loaded::default()
        })
    }

    /// Carries `store.json` into a database that has never been written,
    /// in one transaction, then renames the file; a crash in between
    /// leaves the file for the next open to rename.
    fn migrate(&mut self, dir: &Path) -> Result<Option<usize>, StoreError> {
        let json = dir.join(JSON_FILE);
        let bytes = match std::fs::read(&json) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(files(&json)(e.to_string())),
        };
        let sql = |e: rusqlite::Error| files(&self.path)(e.to_string());
        let fresh = self.meta("revision").map_err(sql)?.is_none();
        let mut carried = None;
        if fresh {
            let saved: Saved = serde_json::from_slice(&bytes)
                .map_err(|e| files(&json)(format!("store.json is not a shoal store: {e}")))?;
            let changes: Vec<Change> = saved
                .leases
                .iter()
                .map(|(id, ms)| Change::Grant(*id, Duration::from_millis(*ms)))
                .chain(saved.entries.iter().cloned().map(Change::Put))
                .collect();
            self.commit(&changes, saved.revision, saved.next_lease)
                .map_err(|e| files(&self.path)(e.to_string()))?;
            carried = Some(saved.entries.len());
        }
        let done = match carried {
            Some(_) => dir.join(format!("{JSON_FILE}.migrated")),
            None => {
                // Carried over before, or written by an older agent run
                // here since: either way not what the database holds.
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let kept = dir.join(format!("{JSON_FILE}.not-imported.{secs}"));
                tracing::warn!(file = %json.display(), kept = %kept.display(), "store.json beside a store.db that is in use: not imported (an older agent ran here after the migration?); kept aside");
                kept
            }
        };
        std::fs::rename(&json, &done)
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| files(&json)(format!("rename to {}: {e}", done.display())))?;
        Ok(carried)
    }

    /// Records `changes` and the store's counters in one transaction; on
    /// return they are on stable storage.
    pub fn commit(
        &mut self,
        changes: &[Change],
        revision: Revision,
        next_lease: LeaseId,
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO kv (key, value, mod_revision, lease) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                   mod_revision = excluded.mod_revision, lease = excluded.lease",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
            let mut grant =
                tx.prepare_cached("INSERT OR REPLACE INTO leases (id, ttl_ms) VALUES (?1, ?2)")?;
            let mut revoke = tx.prepare_cached("DELETE FROM leases WHERE id = ?1")?;
            for c in changes {
                match c {
                    Change::Put(e) => {
                        put.execute(params![e.key, e.value, e.mod_revision, e.lease])?;
                    }
                    Change::Delete(key) => {
                        delete.execute([key])?;
                    }
                    Change::Grant(id, ttl) => {
                        grant.execute(params![id, ttl.as_millis() as i64])?;
                    }
                    Change::Revoke(id) => {
                        revoke.execute([id])?;
                    }
                }
            }
            let mut meta = tx.prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?;
            meta.execute(params!["revision", revision])?;
            meta.execute(params!["next_lease", next_lease])?;
        }
        tx.commit()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How many bytes of the log, `wal_len` long before it was opened, lie
/// past its last complete commit. Asked right after open, before any
/// write: recovery has then counted the valid frames.
fn torn_tail(conn: &Connection, wal_len: u64) -> rusqlite::Result<u64> {
    const HEADER: u64 = 32;
    const FRAME_HEADER: u64 = 24;
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let (_busy, frames, _done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let valid = match frames.max(0) as u64 {
        0 if wal_len >= HEADER => HEADER,
        0 => 0,
        n => HEADER + n * (FRAME_HEADER + page.max(0) as u64),
    };
    Ok(wal_len.saturating_sub(valid))
}
