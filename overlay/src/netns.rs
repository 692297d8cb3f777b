//! Network namespaces: named ones under /run/netns (made and removed the way
//! `ip netns add/delete` does, without forking `ip`), and [`NsWorker`], a
//! dedicated thread that enters a namespace once and then runs netlink work
//! there on its own current-thread runtime.
//!
//! A netlink socket belongs to the namespace of the thread that opened it,
//! and `setns` changes only the calling thread. So namespace work never runs
//! on a shared tokio worker: each namespace gets a fresh std thread that
//! `setns`es first, then opens its rtnetlink connection.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use rtnetlink::Handle;
use tokio::runtime::Runtime;

use crate::error::Error;

/// Where named namespaces live, as for `ip netns`.
pub const NETNS_DIR: &str = "/run/netns";

/// A namespace to work in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsTarget {
    /// The namespace of the calling process.
    Current,
    /// A file: /run/netns/NAME or a path like /proc/PID/ns/net.
    Path(PathBuf),
}

impl NsTarget {
    /// A config value: a name under /run/netns, or an absolute path.
    pub fn from_config(ns: &str) -> NsTarget {
        if ns.starts_with('/') {
            NsTarget::Path(PathBuf::from(ns))
        } else {
            NsTarget::Path(Path::new(NETNS_DIR).join(ns))
        }
    }

    /// `None` = [`NsTarget::Current`].
    pub fn from_option(ns: Option<&str>) -> NsTarget {
        ns.map_or(NsTarget::Current, NsTarget::from_config)
    }

    /// Opens the namespace file (for `setns` or a link's `netns` attribute).
    pub fn open(&self) -> Result<File, Error> {
        let path = match self {
            NsTarget::Current => PathBuf::from("/proc/self/ns/net"),
            NsTarget::Path(p) => p.clone(),
        };
        File::open(&path).map_err(Error::io(format!("open netns {}", path.display())))
    }
}

impl std::fmt::Display for NsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NsTarget::Current => f.write_str("the current netns"),
            NsTarget::Path(p) => match p.strip_prefix(NETNS_DIR) {
                Ok(name) => write!(f, "netns {}", name.display()),
                Err(_) => write!(f, "netns {}", p.display()),
            },
        }
    }
}

/// What a path that should name a namespace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Missing,
    /// A namespace: a bind mount of one, or a `/proc/PID/ns/net` link.
    Namespace,
    /// A file with no namespace mounted on it: what a crash between
    /// creating the file and mounting onto it leaves, or what a mount made
    /// in another mount namespace looks like from here.
    Stale,
    /// Something that cannot be looked at (permissions, a loop): neither
    /// trusted nor removed.
    Unreadable,
}

/// What `path` holds now.
pub fn entry(path: &Path) -> Entry {
    match statfs(path) {
        Ok(fs) if fs.filesystem_type() == NSFS_MAGIC => Entry::Namespace,
        Ok(_) => Entry::Stale,
        Err(nix::errno::Errno::ENOENT) => Entry::Missing,
        Err(_) => Entry::Unreadable,
    }
}

/// How old a file with nothing mounted must be before [`list`] takes it
/// for a leftover: [`create`] makes the file a moment before it mounts
/// onto it, and a listing must not take that moment for a crash.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// True if `ns` (a name under /run/netns or a path) is a namespace. A
/// file under /run/netns with nothing mounted on it is none.
pub fn exists(ns: &str) -> bool {
    match NsTarget::from_config(ns) {
        NsTarget::Path(p) => entry(&p) == Entry::Namespace,
        NsTarget::Current => true,
    }
}

/// The namespaces under /run/netns whose names start with `prefix`,
/// sorted. A file there with that prefix and no namespace mounted on it is
/// not listed (so the caller makes the namespace again if it still wants
/// it; [`create`] replaces the file); one older than [`STALE_AFTER`] is a
/// crash's leftover and is removed (logged at warn).
pub fn list(prefix: &str) -> Result<Vec<String>, Error> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {NETNS_DIR}"))(e)),
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .filter(|n| !remove_if_stale(n, STALE_AFTER))
        .collect();
    out.sort();
    Ok(out)
}

/// Removes /run/netns/NAME if it is a file with no namespace mounted on
/// it, at least `min_age` old, logging at warn; true if it is such a file
/// (removed, too young, or not removable).
fn remove_if_stale(name: &str, min_age: std::time::Duration) -> bool {
    let path = Path::new(NETNS_DIR).join(name);
    if entry(&path) != Entry::Stale {
        return false;
    }
    let age = std::fs::symlink_metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age < min_age {
        return true;
    }
    match delete(name) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            "removed a namespace file with no namespace mounted on it (left by a crash, or mounted in another mount namespace)"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "a namespace file has no namespace mounted on it and cannot be removed"
        ),
    }
    true
}

/// Creates the named namespace `name`; equals `ip netns add NAME`. A fresh
/// thread unshares its network namespace and bind-mounts it onto
/// /run/netns/NAME, which keeps the namespace alive after the thread ends.
/// Fails if a namespace of that name exists; a file of that name with no
/// namespace mounted on it (a crash's leftover) is replaced.
pub fn create(name: &str) -> Result<(), Error> {
    prepare_dir()?;
    let path = Path::new(NETNS_DIR).join(name);
    let what = format!("ip netns add {name}");
    remove_if_stale(name, std::time::Duration::ZERO);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io(format!("{what}: create {}", path.display())))?;
    let mount_path = path.clone();
    let result = std::thread::Builder::new()
        .name(format!("netns add {name}"))
        .spawn(move || -> Result<(), nix::Error> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &mount_path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .map_err(Error::io(format!("{what}: spawn thread")))?
        .join()
        .map_err(|_| Error::Worker(what.clone()))?;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(Error::sys(what)(e));
    }
    Ok(())
}

/// Removes the named namespace; equals `ip netns delete NAME`. The kernel
/// frees it, and every link inside, once nothing else holds it.
pub fn delete(name: &str) -> Result<(), Error> {
    let path = Path::new(NETNS_DIR).join(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys(format!("ip netns delete {name}: umount"))(e)),
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("ip netns delete {name}: remove"))(e))
        }
        _ => Ok(()),
    }
}

/// Makes /run/netns a shared mount point, as `ip netns add` does, so that
/// namespaces mounted there are seen from other mount namespaces too.
fn prepare_dir() -> Result<(), Error> {
    std::fs::create_dir_all(NETNS_DIR).map_err(Error::io(format!("create {NETNS_DIR}")))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(Error::sys(format!("bind-mount {NETNS_DIR}")))?;
            mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)
                .map_err(Error::sys(format!("make {NETNS_DIR} shared")))
        }
        Err(e) => Err(Error::sys(format!("make {NETNS_DIR} shared"))(e)),
    }
}

type Job = Box<dyn FnOnce(&Runtime, &Handle) + Send>;

/// A thread inside one namespace with its own current-thread runtime and
/// rtnetlink connection. Jobs run one at a time, in order.
pub struct NsWorker {
    label: String,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsWorker {
    /// Starts a worker in `target`; fails if the namespace cannot be entered.
    pub fn spawn(target: &NsTarget) -> Result<NsWorker, Error> {
        let label = target.to_string();
        let file = match target {
            NsTarget::Current => None,
            NsTarget::Path(_) => Some(target.open()?),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Error>>();
        let setup_label = label.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shoal {label}"))
            .spawn(move || {
                let setup = move || -> Result<(Runtime, Handle), Error> {
                    if let Some(f) = file {
                        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| {
                            let what = match e {
                                nix::errno::Errno::EINVAL => format!(
                                    "setns into {setup_label} (no namespace is mounted on that file)"
                                ),
                                _ => format!("setns into {setup_label}"),
                            };
                            Error::sys(what)(e)
                        })?;
                    }
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(Error::io("start a runtime"))?;
                    let (conn, handle, _) = {
                        let _guard = rt.enter();
                        rtnetlink::new_connection()
                            .map_err(Error::io(format!("netlink socket in {setup_label}")))?
                    };
                    rt.spawn(conn);
                    Ok((rt, handle))
                };
                match setup() {
                    Ok((rt, handle)) => {
                        let _ = ready_tx.send(Ok(()));
                        while let Ok(job) = rx.recv() {
                            job(&rt, &handle);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(Error::io(format!("spawn worker for {label}")))?;
        ready_rx
            .recv()
            .map_err(|_| Error::Worker(label.clone()))??;
        Ok(NsWorker {
            label,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` inside the namespace and waits for its result.
    pub fn call<F, Fut, T>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + 'static,
        T: Send + 'static,
    {
        let (done_tx, done_rx) = mpsc::channel();
        let job: Job = Box::new(move |rt, handle| {
            let _ = done_tx.send(rt.block_on(f(handle.clone())));
        });
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Worker(self.label.clone()))?;
        tx.send(job)
            .map_err(|_| Error::Worker(self.label.clone()))?;
        done_rx
            .recv()
            .map_err(|_| Error::Worker(self.label.clone()))?
    }
}

impl Drop for NsWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` once inside `target` on a fresh worker.
pub fn run_in<F, Fut, T>(target: &NsTarget, f: F) -> Result<T, Error>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + 'static,
    T: Send + 'static,
{
    NsWorker::spawn(target)?.call(f)
}
