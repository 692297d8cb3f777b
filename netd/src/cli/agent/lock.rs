//! The state directory's lock (`<state-dir>/agent.lock`, `flock(2)`): held
//! by the agent whose control plane runs, so that two agents never write
//! the same task records, embedded store or kernel state.
//!
//! A graceful restart passes it on: the old agent lets go once its control
//! plane has stopped, before it sends its sockets, and the new one takes
//! it when they arrive. Two agents started at once with none running both
//! find no handover socket; the second finds the lock held and exits
//! instead of running a second control plane. The kernel drops the lock
//! with the process, so a killed agent never leaves it behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name under the state directory.
pub const FILE: &str = "agent.lock";

/// The held lock; dropping it lets go.
#[derive(Debug)]
pub struct StateLock {
    _held: Flock<File>,
}

/// Takes the lock of `state_dir` (made if missing), waiting up to `wait`
/// for its holder to let go. The error names the file and, when it can,
/// the holder's pid.
pub fn acquire(state_dir: &Path, wait: Duration) -> Result<StateLock, String> {
    let path = state_dir.join(FILE);
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    std::fs::create_dir_all(state_dir).map_err(|e| what(&e))?;
    let deadline = Instant::now() + wait;
    let mut file = open(&path).map_err(|e| what(&e))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut held) => {
                // For people: who holds it (the lock is the flock itself).
                let _ = held.set_len(0);
                let _ = writeln!(&mut *held, "{}", std::process::id());
                return Ok(StateLock { _held: held });
            }
            Err((f, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(format!(
                    "{}: held by another netd agent{} that offers no handover; not starting a second one",
                    path.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                ));
            }
            Err((_, e)) => return Err(what(&e)),
        }
    }
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_a_waiter_gets_it_when_let_go() {
        let dir = std::env::temp_dir().join(format!("netd-lock-{}", std::process::id()));
        let first = acquire(&dir, Duration::ZERO).unwrap();
        let err = acquire(&dir, Duration::ZERO).unwrap_err();
        assert!(err.contains("agent.lock"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        acquire(&dir, Duration::from_secs(5)).expect("taken once let go");
        letting_go.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
