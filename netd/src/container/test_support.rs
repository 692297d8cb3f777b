//! Test fixtures: per-run names, and guards that clean up even on panic.

use std::path::PathBuf;

/// `shoalct-<pid>-<tag>`: unique per test run, recognisable as ours.
pub(crate) fn unique(tag: &str) -> String {
    format!("shoalct-{}-{tag}", std::process::id())
}

/// Deletes the named namespace on drop.
pub(crate) struct NsGuard(pub(crate) String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = shoal_overlay::netns::delete(&self.0);
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(tag));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
