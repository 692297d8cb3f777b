//! A graceful restart of one node's agent: a second `netd agent` started
//! on the same state directory while the first runs takes its listening
//! sockets over; the first drains and exits (see netd's `handover`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::daemon::Daemon;
use super::{wait_for, Cluster, START_TIMEOUT};

/// The agent a successor took over from, draining; SIGKILLed if dropped
/// while it still runs.
#[derive(Debug)]
pub struct Predecessor {
    daemon: Daemon,
    took: Duration,
}

impl Predecessor {
    /// How long the successor took, from its start to having taken over.
    pub fn took(&self) -> Duration {
        self.took
    }

    /// Its pid (until [`Predecessor::wait_exit`] reaps it).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Waits up to `limit` for it to exit, then SIGKILLs it; its exit
    /// status (`None` if it was not running any more).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.daemon.wait(Instant::now() + limit)
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl Cluster {
    /// Starts a second agent for node `i` (same flags, same state
    /// directory, same log) while the first runs, and waits until it has
    /// taken over: it binds its own `handover.sock` once it has reconciled
    /// and just before telling the old one. Returns the old agent, which
    /// drains and exits on its own. Panics after [`START_TIMEOUT`].
    pub fn hand_over(&mut self, i: usize) -> Predecessor {
        let path = self.state_dir(i).join("handover.sock");
        let before = inode(&path);
        assert!(
            before.is_some(),
            "the agent of {} does not listen for a successor",
            self.nodes[i].name
        );
        let started = Instant::now();
        let mut next = self.agent_daemon(i);
        next.start();
        let old = std::mem::replace(&mut self.agents[i], next);
        let mut old = Predecessor {
            daemon: old,
            took: Duration::ZERO,
        };
        wait_for("the new agent to take over", START_TIMEOUT, || {
            inode(&path).is_some_and(|n| Some(n) != before)
        });
        old.took = started.elapsed();
        old
    }
}
