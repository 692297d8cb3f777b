//! The task records: `<state-dir>/tasks.json`, rewritten (atomically) on
//! every change, read back by a restarted agent, which takes back the
//! tasks whose process still runs and cleans up the others.

use std::collections::BTreeMap;
use std::path::Path;

use super::{read_json, Ending, Recorded, Task, Tasks};
use crate::container;
use crate::model::{keys, Endpoint, EndpointState};

impl Tasks {
    /// The tasks recorded under `dir` by an earlier agent (none if there
    /// is no record). A record that cannot be read or decoded gives none
    /// and says so: its tasks are then left alone, not swept.
    pub fn load(dir: &Path) -> Recorded {
        let path = dir.join("tasks.json");
        let read = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<BTreeMap<String, Task>>(&b).map_err(|e| e.to_string())
            });
        match read {
            Ok(tasks) => Recorded { tasks, whole: true },
            Err(_) if !path.exists() => Recorded {
                tasks: BTreeMap::new(),
                whole: true,
            },
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "tasks file unreadable; starting with none, and leaving alone the namespaces and addresses of tasks it may have named");
                Recorded {
                    tasks: BTreeMap::new(),
                    whole: false,
                }
            }
        }
    }

    /// Rewrites `tasks.json` from the registry (a temporary file, synced,
    /// then a rename, synced), one writer at a time: after a crash or a
    /// power cut the file is the old one or the new one, never half of one.
    pub(super) fn persist(&self) -> std::io::Result<()> {
        let _one = self
            .inner
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let tasks = self.lock().clone();
        let path = self.inner.dir.join("tasks.json");
        let tmp = self.inner.dir.join("tasks.json.tmp");
        let body = serde_json::to_vec_pretty(&tasks).unwrap_or_default();
        let result = std::fs::create_dir_all(&self.inner.dir)
            .and_then(|_| write_durably(&tmp, &path, &body));
        if let Err(e) = &result {
            tracing::error!(file = %path.display(), error = %e, "cannot record tasks");
        }
        result
    }

    /// Takes back the tasks an earlier agent recorded: those whose process
    /// still runs are adopted as they are (their endpoint keeps its state);
    /// the others are cleaned up, and so is what a create cut short left
    /// (`sweep`).
    pub async fn restore(&self, recorded: Recorded) {
        let store = self.inner.store.as_ref();
        for (name, task) in recorded.tasks {
            let running = task.pid.is_some_and(|p| {
                container::alive(p) && container::start_time(p) == task.start_time
            });
            self.lock().insert(name.clone(), task.clone());
            let key = keys::endpoint(&task.network, &name);
            let stored = match read_json::<Endpoint>(store, &key).await {
                Ok(Some((e, _, _))) if e.node == self.inner.node => Some(e),
                _ => None,
            };
            if !running {
                tracing::info!(task = %name, "the task's process is gone; cleaning up");
                if let Some(e) = stored {
                    self.inner.owned.note_state(&e.network, &e.name, e.state);
                    let _ = self.inner.owned.set_endpoint(store, e).await;
                }
                self.remove(&name, Ending::Exited).await;
                continue;
            }
            let state = stored.map_or(EndpointState::Starting, |e| e.state);
            let ep = Endpoint {
                name: name.clone(),
                network: task.network.clone(),
                service: task.service.clone(),
                node: self.inner.node.clone(),
                ip: task.ip,
                weight: task.weight,
                state,
            };
            if let Err(e) = self.inner.owned.set_endpoint(store, ep).await {
                tracing::warn!(task = %name, error = %e, "cannot re-assert the task's endpoint now; the lease loop will");
            }
            tracing::info!(task = %name, pid = ?task.pid, "task taken back");
            self.watch(task);
        }
        let recorded_now = self.persist().is_ok();
        // Only with a whole record can a namespace or address that no task
        // names be told from a task's that the record lost.
        if recorded.whole && recorded_now {
            self.sweep().await;
        }
    }
}

/// Writes `body` to `tmp`, syncs it, renames it onto `path` and syncs the
/// directory, so the rename itself survives a power cut.
fn write_durably(tmp: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
