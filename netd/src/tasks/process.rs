//! A task's process (step 2 of its life, see [`super`]): recorded once the
//! client (or the scheduler) has started it, watched through a pidfd, its
//! exit ending the task; and, once the task ends, whatever it left running
//! in the task's namespace killed.

use std::path::Path;
use std::time::Duration;

use super::{Ending, Task, Tasks};
use crate::container;
use crate::ops::OpError;

impl Tasks {
    /// Records the task's process and ends the task when it exits.
    pub async fn set_pid(&self, name: &str, pid: u32) -> Result<Task, OpError> {
        self.set_process(name, pid, Vec::new())
    }

    /// [`Tasks::set_pid`] for a replica netd runs itself, with the command
    /// it runs (a change of the service's command replaces the replica).
    pub async fn set_replica_pid(
        &self,
        name: &str,
        pid: u32,
        command: Vec<String>,
    ) -> Result<Task, OpError> {
        self.set_process(name, pid, command)
    }

    fn set_process(&self, name: &str, pid: u32, command: Vec<String>) -> Result<Task, OpError> {
        let task = {
            let mut tasks = self.lock();
            let t = tasks.get_mut(name).ok_or_else(|| OpError::NotFound {
                kind: "task",
                name: name.to_string(),
            })?;
            if t.pid.is_some() {
                return Err(OpError::Conflict {
                    field: "pid".into(),
                    message: format!("task `{name}` already has a process"),
                });
            }
            t.pid = Some(pid);
            t.start_time = container::start_time(pid);
            t.command = command;
            t.clone()
        };
        let _ = self.persist();
        self.watch(task.clone());
        Ok(task)
    }

    pub(super) fn watch(&self, task: Task) {
        let Some(pid) = task.pid else { return };
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = container::wait_exit(pid).await {
                tracing::warn!(task = %task.name, pid, error = %e, "cannot watch the task's process; polling");
                while container::alive(pid) && container::start_time(pid) == task.start_time {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            // Still the same task (not removed and re-created meanwhile)?
            if me.get(&task.name).is_some_and(|t| t.pid == Some(pid)) {
                tracing::info!(task = %task.name, pid, "the task's process exited");
                me.remove(&task.name, Ending::Exited).await;
            }
        });
    }
}

/// Kills (SIGKILL) every process inside namespace `netns` (a name under
/// /run/netns), matched by its network namespace as `ip netns pids` does;
/// returns how many. Each is signalled through a pidfd opened before the
/// match is checked again, so a pid recycled meanwhile is never hit.
pub(super) fn kill_leftovers(netns: &str) -> usize {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(Path::new(shoal_overlay::netns::NETNS_DIR).join(netns)) else {
        return 0;
    };
    let inside = |pid: i32| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| (m.dev(), m.ino()) == (ns.dev(), ns.ino()))
    };
    let me = std::process::id() as i32;
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in proc.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || !inside(pid) {
            continue;
        }
        let Some(fd) = Pid::from_raw(pid).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
        else {
            continue;
        };
        if inside(pid) && pidfd_send_signal(&fd, Signal::KILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    use crate::container::ContainerNs;

    /// Deletes the namespace and kills the children on drop.
    struct Guard(String, Vec<Child>);

    impl Drop for Guard {
        fn drop(&mut self) {
            for c in &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = ContainerNs::remove(&self.0);
        }
    }

    #[test]
    fn what_a_task_leaves_in_its_namespace_is_killed_and_nothing_else() {
        let ns = format!("shoal-unit-{}-leftovers", std::process::id());
        ContainerNs::create(&ns).unwrap();
        let mut g = Guard(ns.clone(), Vec::new());
        let spawn = |args: &[&str]| Command::new(args[0]).args(&args[1..]).spawn().unwrap();
        g.1.push(spawn(&["ip", "netns", "exec", &ns, "sleep", "30"]));
        g.1.push(spawn(&["ip", "netns", "exec", &ns, "sleep", "30"]));
        g.1.push(spawn(&["sleep", "30"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pids = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&pids.stdout)
                .split_whitespace()
                .count()
                == 2
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the sleeps never entered {ns}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(kill_leftovers(&ns), 2);
        for c in &mut g.1[..2] {
            let status = c.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
        }
        assert!(
            g.1[2].try_wait().unwrap().is_none(),
            "a process outside was hit"
        );
        assert_eq!(kill_leftovers(&ns), 0);
        assert_eq!(kill_leftovers("shoal-unit-no-such-namespace"), 0);
    }
}
