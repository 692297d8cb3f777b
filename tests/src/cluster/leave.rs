//! Leaving: a cluster removes everything it made when dropped (logs
//! printed and optionally kept on a panic), or is kept for exploration and
//! removed later by its prefix.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::daemon::Stop;
use super::{Cluster, LOGS_ENV};
use crate::cmd::{netns_list, output};

impl Cluster {
    /// Leaves everything running when dropped (namespaces, etcd, agents,
    /// replicas, files) and returns the lab prefix; remove it later with
    /// [`remove_kept`].
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.prefix().to_string()
    }

    /// With `SHOAL_TEST_LOGS=DIR` set, copies every log (agents, etcd,
    /// replicas) to `DIR/<prefix>/` before the cluster's files go.
    fn save_logs(&self) {
        let Some(to) = std::env::var_os(LOGS_ENV) else {
            return;
        };
        let to = PathBuf::from(to).join(self.prefix());
        let mut logs: Vec<PathBuf> = self
            .agents
            .iter()
            .chain(&self.etcd)
            .map(|d| d.log().to_path_buf())
            .collect();
        for i in 0..self.nodes.len() {
            if let Ok(entries) = std::fs::read_dir(self.state_dir(i).join("logs")) {
                logs.extend(entries.flatten().map(|e| e.path()));
            }
        }
        for log in logs {
            let name = log
                .strip_prefix(&self.dir)
                .unwrap_or(&log)
                .to_string_lossy()
                .replace('/', "_");
            let _ = std::fs::create_dir_all(&to);
            let _ = std::fs::copy(&log, to.join(name));
        }
        eprintln!("cluster logs saved under {}", to.display());
    }

    fn print_logs(&self) {
        for d in self.agents.iter().chain(&self.etcd) {
            let tail = d.log_tail(30);
            if !tail.is_empty() {
                eprintln!("--- end of {} ---\n{}", d.log().display(), tail.join("\n"));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            for d in self.agents.iter_mut().chain(self.etcd.iter_mut()) {
                d.forget();
            }
            std::mem::forget(self.lab.take());
            return;
        }
        if std::thread::panicking() {
            self.print_logs();
            self.save_logs();
        }
        let grace = Duration::from_secs(3);
        for d in &self.agents {
            d.signal(Stop::Term);
        }
        let deadline = Instant::now() + grace;
        for d in &mut self.agents {
            d.wait(deadline);
        }
        for d in &self.etcd {
            d.signal(Stop::Term);
        }
        let deadline = Instant::now() + grace;
        for d in &mut self.etcd {
            d.wait(deadline);
        }
        // Kills what is left in the namespaces (replicas), then removes them.
        drop(self.lab.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a cluster left by [`Cluster::keep`]: kills every process in its
/// namespaces, deletes them (tasks and sandboxes first, the underlay last)
/// and its temporary directory.
pub fn remove_kept(prefix: &str) {
    assert!(!prefix.is_empty(), "an empty prefix would match everything");
    let ours = |n: &str| {
        n.starts_with(prefix)
            || n.starts_with(&format!("shoal.{prefix}"))
            || n.starts_with(&format!("shoal-t.{prefix}"))
    };
    // Everything is killed before anything is deleted (a live agent would
    // make its sandboxes again); a few rounds, as SIGKILL lands
    // asynchronously.
    for _ in 0..5 {
        let mut all: Vec<String> = netns_list().into_iter().filter(|n| ours(n)).collect();
        if all.is_empty() {
            break;
        }
        for ns in &all {
            let pids = output("ip", &["netns", "pids", ns]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        // shoal's first, then nodes and members, the underlay last.
        let underlay = format!("{prefix}u");
        all.sort_by_key(|n| (!n.starts_with("shoal"), *n == underlay));
        for ns in &all {
            let _ = output("ip", &["netns", "delete", ns]);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/shoal") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("shoal-cluster-{prefix}")));
}
