//! Child processes that stop when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A child process: SIGTERM on drop, SIGKILL if it lingers past a short grace.
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    /// Starts `program args...` with stdout and stderr piped.
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{program}`: {e}"));
        Proc {
            child: Some(child),
            what: format!("{program} {}", args.join(" ")),
        }
    }

    /// Starts a prepared command (stdin from /dev/null, stdout discarded,
    /// stderr piped); `what` names it in messages.
    pub fn from_command(mut cmd: Command, what: &str) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        Proc {
            child: Some(child),
            what: what.to_string(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child, e.g. to read its stdout.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after `grace`) and returns its exit
    /// code (`None` if killed by a signal) and stderr.
    pub fn stop(&mut self, grace: Duration) -> (Option<i32>, String) {
        let Some(mut c) = self.child.take() else {
            return (None, String::new());
        };
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    break;
                }
            }
        }
        let out = c.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let (_, err) = self.stop(Duration::from_secs(2));
            if std::thread::panicking() && !err.is_empty() {
                eprintln!("stderr of `{}`:\n{err}", self.what);
            }
        }
    }
}
