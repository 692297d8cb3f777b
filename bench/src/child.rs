//! Child processes that cannot outlive the harness: [`ChildGuard`] kills
//! and reaps its process on drop, panics included.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A spawned process, killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout discarded and stderr written to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<ChildGuard> {
        let err =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({cmd:?})"))?;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// Waits until `addr` accepts connections; fails with the end of the
    /// child's log if it exits first or `limit` passes.
    pub fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening: {}",
                    self.name,
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not listening on {addr} after {limit:?}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the child's stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_guard_kills_the_child() {
        let dir = std::env::temp_dir();
        let log = dir.join(format!("lbbench-child-test-{}", std::process::id()));
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let g = ChildGuard::spawn("sleep", cmd, &log).unwrap();
        let pid = g.id();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists());
        let r = std::panic::catch_unwind(move || {
            let _g = g;
            panic!("test panic");
        });
        assert!(r.is_err());
        // Reaped, so the pid is gone (not a zombie).
        assert!(!proc_dir.exists(), "process {pid} survived the guard");
        let _ = std::fs::remove_file(log);
    }
}
