//! Processes netd did not necessarily start (a container's process after an
//! agent restart): waiting for their exit, telling them apart from a
//! recycled pid, and stopping them.
//!
//! Everything goes through a pidfd (`pidfd_open(2)`, Linux 5.3): it refers
//! to one process, not to a number, so a signal sent through it can never
//! reach a process that later got the same pid, and it becomes readable when
//! the process exits (a zombie counts as exited), whoever its parent is.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A pidfd for one process, registered with tokio: [`ProcessWatch::exited`]
/// resolves when the process exits. Must be made inside a tokio runtime
/// with I/O enabled.
#[derive(Debug)]
pub struct ProcessWatch {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl ProcessWatch {
    /// Opens a pidfd for `pid`; `Ok(None)` if no such process exists any
    /// more. A pid read earlier may since have been recycled: check it with
    /// [`start_time`] first when that matters.
    pub fn open(pid: u32) -> io::Result<Option<ProcessWatch>> {
        let raw = pid_of(pid)?;
        let fd = match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) => return Ok(None),
            Err(e) => return Err(named(format!("pidfd_open {pid}"), e.into())),
        };
        // tokio 1.54 deprecates the safe constructors in favour of `unsafe`
        // ones because a general `AsRawFd` may change its fd; an `OwnedFd`
        // owns one fd for its whole life, which is what the contract asks,
        // so the safe (deprecated) form is sound here and keeps the crate
        // free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE)
            .map_err(|e| named(format!("watch pid {pid}"), e))?;
        Ok(Some(ProcessWatch { pid, fd }))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` to this process (and never to a process that reused its
    /// pid). Succeeds if the process has already exited.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        match pidfd_send_signal(self.fd.get_ref(), sig) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(named(
                format!("send signal {} to pid {}", sig.as_raw(), self.pid),
                e.into(),
            )),
        }
    }

    /// Resolves once the process has exited (it may still be an unreaped
    /// zombie). Cancel-safe, and ready at once on every later call.
    pub async fn exited(&self) -> io::Result<()> {
        // Readable means exited; the readiness is never cleared.
        let _ready = self
            .fd
            .readable()
            .await
            .map_err(|e| named(format!("wait for pid {}", self.pid), e))?;
        Ok(())
    }
}

/// Waits until process `pid` exits; it need not be a child of ours.
/// Returns at once if it is already gone. Must run inside a tokio runtime
/// with I/O enabled.
pub async fn wait_exit(pid: u32) -> io::Result<()> {
    match ProcessWatch::open(pid)? {
        Some(watch) => watch.exited().await,
        None => Ok(()),
    }
}

/// True if process `pid` exists and has not exited (a zombie has). Says
/// nothing about whether it is the process that had this pid before; see
/// [`start_time`].
pub fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x')),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // /proc unreadable: fall back to kill(pid, 0).
        Err(_) => match pid_of(pid) {
            Ok(p) => matches!(
                rustix::process::test_kill_process(p),
                Ok(()) | Err(Errno::PERM)
            ),
            Err(_) => false,
        },
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// /proc/PID/stat); `None` if there is no such process. A pid recorded
/// together with its start time identifies one process: if the pid is later
/// found with another start time, it was recycled.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|s| s.start_time)
}

/// How [`stop_process`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The process had already exited; no signal was needed.
    AlreadyGone,
    /// It exited within the grace period after SIGTERM.
    Terminated,
    /// It outlived the grace period and was killed with SIGKILL.
    Killed,
}

/// Stops process `pid`: SIGTERM, up to `grace` for it to exit, then SIGKILL
/// and a wait for its exit. Signals go through a pidfd, so a process that
/// reuses the pid meanwhile is never hit. The final wait has no bound (a
/// process stuck in the kernel may take long to die); wrap the call in a
/// timeout if that matters. A child of the caller is left for the caller to
/// reap.
pub async fn stop_process(pid: u32, grace: Duration) -> io::Result<StopOutcome> {
    let Some(watch) = ProcessWatch::open(pid)? else {
        return Ok(StopOutcome::AlreadyGone);
    };
    if !alive(pid) {
        return Ok(StopOutcome::AlreadyGone);
    }
    watch.signal(Signal::TERM)?;
    if let Ok(done) = tokio::time::timeout(grace, watch.exited()).await {
        done?;
        return Ok(StopOutcome::Terminated);
    }
    watch.signal(Signal::KILL)?;
    watch.exited().await?;
    Ok(StopOutcome::Killed)
}

/// The fields of /proc/PID/stat shoal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Field 3: R, S, D, Z, T, ...
    state: char,
    /// Field 22: start time in clock ticks since boot.
    start_time: u64,
}

/// Parses /proc/PID/stat. Field 2 (comm) is in parentheses and may itself
/// hold spaces and parentheses, so the fields after it start at the last ')'.
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3.
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat { state, start_time })
}

fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))
}

fn named(what: String, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    /// Kills and reaps the child even if the test panics.
    struct ChildGuard(Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn(prog: &str, args: &[&str]) -> ChildGuard {
        ChildGuard(
            Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    }

    #[test]
    fn stat_parsing_survives_odd_comm() {
        let line = "4242 (a) (b c) ) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    3 4 0 0 20 0 1 0 987654321 1000 200 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 987654321);
        assert_eq!(parse_stat("12 (sh) R 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        assert!(alive(me));
        assert!(!alive(0));
    }

    #[tokio::test]
    async fn wait_exit_returns_after_kill() {
        let mut child = spawn("sleep", &["30"]);
        let pid = child.0.id();
        assert!(alive(pid));
        let waiter = tokio::spawn(wait_exit(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "returned while the process lived");
        let start = Instant::now();
        child.0.kill().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_exit did not return")
            .unwrap()
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        // A zombie counts as exited.
        assert!(!alive(pid));
    }

    #[tokio::test]
    async fn wait_exit_on_dead_pid_is_immediate() {
        let mut child = spawn("true", &[]);
        let pid = child.0.id();
        child.0.wait().unwrap();
        assert!(!alive(pid));
        assert_eq!(start_time(pid), None);
        tokio::time::timeout(Duration::from_millis(500), wait_exit(pid))
            .await
            .expect("wait_exit blocked on a dead pid")
            .unwrap();
        let outcome = stop_process(pid, Duration::from_secs(1)).await.unwrap();
        assert_eq!(outcome, StopOutcome::AlreadyGone);
    }

    #[tokio::test]
    async fn stop_process_terminates_politely() {
        let child = spawn("sleep", &["30"]);
        let outcome = stop_process(child.0.id(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(outcome, StopOutcome::Terminated);
    }

    #[tokio::test]
    async fn stop_process_kills_after_grace() {
        // The ignored SIGTERM survives the exec, so `sleep` itself ignores it.
        let child = spawn("sh", &["-c", "trap '' TERM; exec sleep 30"]);
        let pid = child.0.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "sleep\n" {
            assert!(Instant::now() < deadline, "sh never exec'ed sleep");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grace = Duration::from_millis(300);
        let start = Instant::now();
        let outcome = stop_process(pid, grace).await.unwrap();
        assert_eq!(outcome, StopOutcome::Killed);
        assert!(start.elapsed() >= grace);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!alive(pid));
    }
}
