//! [`Daemon`]: a long-running process of the cluster (an etcd member or a
//! netd agent) that lives inside a lab namespace, writes to its own log
//! file and can be stopped and started again with the same arguments.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How to stop a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the process shuts down as it would on `systemctl stop`
    /// (SIGKILL if it lingers past the grace).
    Term,
    /// SIGKILL: a crash, or a machine losing power.
    Kill,
}

/// A process started with `nsenter --net=/run/netns/NS PROGRAM ARGS…`: it
/// joins the namespace's network stack and nothing else (no new mount
/// namespace, unlike `ip netns exec`, so the namespaces it mounts under
/// /run/netns are seen by everyone). nsenter execs the program, so the
/// child's pid is the program's. Stdout and stderr are appended to `log`.
/// SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    netns: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// A daemon not started yet.
    pub fn new(
        netns: &str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Daemon {
        Daemon {
            netns: netns.to_string(),
            program: program.to_path_buf(),
            args,
            env,
            log,
            child: None,
        }
    }

    /// Starts it (again); a no-op while it runs.
    pub fn start(&mut self) {
        if self.running() {
            return;
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        let err = out.try_clone().expect("clone a log file handle");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// Whether it runs (reaps it if it exited).
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    false
                }
            },
        }
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends the stop signal without waiting (see [`Daemon::wait`]).
    pub fn signal(&self, how: Stop) {
        if let Some(c) = &self.child {
            let sig = match how {
                Stop::Term => Signal::SIGTERM,
                Stop::Kill => Signal::SIGKILL,
            };
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Waits until `deadline` for it to exit, then SIGKILLs it; returns its
    /// exit status (`None` if it was not running).
    pub fn wait(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        loop {
            match c.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = c.kill();
                    return c.wait().ok();
                }
            }
        }
    }

    /// Stops it and waits (up to `grace` after SIGTERM, then SIGKILL).
    pub fn stop(&mut self, how: Stop, grace: Duration) -> Option<ExitStatus> {
        self.signal(how);
        self.wait(Instant::now() + grace)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Forgets the process without stopping it (it keeps running).
    pub fn forget(&mut self) {
        self.child = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Stop::Kill, Duration::from_secs(2));
        }
    }
}
