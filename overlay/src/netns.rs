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

/// True if `ns` (a name under /run/netns or a path) exists.
pub fn exists(ns: &str) -> bool {
    match NsTarget::from_config(ns) {
        NsTarget::Path(p) => p.exists(),
        NsTarget::Current => true,
    }
}

/// The names under /run/netns starting with `prefix`, sorted.
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
        .collect();
    out.sort();
    Ok(out)
}

/// Creates the named namespace `name`; equals `ip netns add NAME`. A fresh
/// thread unshares its network namespace and bind-mounts it onto
/// /run/netns/NAME, which keeps the namespace alive after the thread ends.
pub fn create(name: &str) -> Result<(), Error> {
    prepare_dir()?;
    let path = Path::new(NETNS_DIR).join(name);
    let what = format!("ip netns add {name}");
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
                        setns(&f, CloneFlags::CLONE_NEWNET)
                            .map_err(Error::sys(format!("setns into {setup_label}")))?;
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
