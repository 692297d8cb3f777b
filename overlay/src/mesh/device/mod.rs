//! shoal's userspace WireGuard device: a TUN device, one UDP socket and
//! the WireGuard protocol state machine of boringtun ([`boringtun::noise::Tunn`]),
//! moved in batches (UDP GSO out, UDP GRO in) by three threads.
//!
//! The device is configured only through its UAPI socket
//! (`/var/run/wireguard/<dev>.sock`), like wireguard-go, so `wg` and
//! [`super::uapi`] work with it unchanged; it stops when that socket is
//! removed (within a second), when its link is deleted, or when
//! [`Device::stop`] is called.
//!
//! # Layout
//! - this file: [`Device`], its threads and the state they share.
//! - [`peers`]: the configuration the datapath reads, one snapshot.
//! - [`api`]: the UAPI server: `get=1`, `set=1`.
//! - [`datapath`]: the send and receive loops and the timers.
//! - [`sys`]: TUN and UDP GSO/GRO system calls.

pub mod api;
pub mod datapath;
pub mod peers;
pub mod sys;

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use self::peers::Snapshot;
use super::{uapi_socket, UAPI_DIR};

/// The state a device's threads share.
pub struct Shared {
    /// The device name, for logs.
    pub name: String,
    stop: AtomicBool,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Shared {
    /// The current configuration.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the configuration with `change` of it, or leaves it as it
    /// is when `change` fails.
    pub fn update<E>(
        &self,
        change: impl FnOnce(&Snapshot) -> Result<Snapshot, E>,
    ) -> Result<(), E> {
        let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        *s = Arc::new(change(&s)?);
        Ok(())
    }

    /// True once the device is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Makes every thread of the device end within [`sys::WAKE`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A running device; [`Device::stop`] ends it.
pub struct Device {
    shared: Arc<Shared>,
    control: JoinHandle<()>,
}

impl Device {
    /// Creates TUN device `name` and its UAPI socket inside the network
    /// namespace `netns` (the caller's when `None`), bound to a random
    /// port, with no key and no peers. Its threads are born in that
    /// namespace, so a later `listen_port` binds there too.
    pub fn start(name: &str, netns: Option<File>) -> io::Result<Device> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let dev = name.to_string();
        let control = std::thread::Builder::new()
            .name(format!("wg {name}"))
            .spawn(move || {
                let started = netns
                    .map_or(Ok(()), |f| {
                        setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
                    })
                    .and_then(|()| open(&dev));
                match started {
                    Ok((tun, listener, shared)) => {
                        let _ = ready_tx.send(Ok(Arc::clone(&shared)));
                        run(&shared, tun, listener);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(shared)) => Ok(Device { shared, control }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the device thread died while starting")),
        }
    }

    /// Stops the device and waits up to `grace` for its threads; the TUN
    /// device and the UAPI socket go with them. False when they were still
    /// running at the deadline (they exit on their own soon after).
    pub fn stop(self, grace: Duration) -> bool {
        self.shared.stop();
        let deadline = Instant::now() + grace;
        while !self.control.is_finished() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.control.join();
        true
    }
}

/// The device's TUN, UAPI listener and initial state (a random port).
fn open(name: &str) -> io::Result<(File, UnixListener, Arc<Shared>)> {
    let tun = sys::open_tun(name)?;
    let sock = sys::bind_udp(0, 0)?;
    let snapshot = Snapshot {
        listen_port: sock.local_addr()?.port(),
        socket: Some(Arc::new(sock)),
        ..Default::default()
    };
    std::fs::create_dir_all(UAPI_DIR)?;
    let path = uapi_socket(name);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        name: name.to_string(),
        stop: AtomicBool::new(false),
        snapshot: RwLock::new(Arc::new(snapshot)),
    });
    Ok((tun, listener, shared))
}

/// The control thread: starts the packet threads, then serves the UAPI
/// socket and runs the timers until the device stops; then waits for the
/// packet threads and removes the socket.
fn run(shared: &Arc<Shared>, tun: File, listener: UnixListener) {
    let path: PathBuf = uapi_socket(&shared.name);
    let tun = Arc::new(tun);
    let spawn = |what: &str, f: fn(&Shared, &File)| -> Option<JoinHandle<()>> {
        let (s, t) = (Arc::clone(shared), Arc::clone(&tun));
        std::thread::Builder::new()
            .name(format!("wg {what} {}", shared.name))
            .spawn(move || f(&s, &t))
            .map_err(|e| tracing::error!("{}: cannot start its {what} thread: {e}", shared.name))
            .ok()
    };
    let threads = [
        spawn("send", datapath::send_loop),
        spawn("recv", datapath::receive_loop),
    ];
    if threads.iter().any(Option::is_none) {
        shared.stop();
    }
    drop(tun);
    let mut timers = vec![0u8; 1 << 16];
    let mut next_second = Instant::now();
    while !shared.stopping() {
        if let Ok(true) = sys::wait_readable(&listener) {
            while let Ok((conn, _)) = listener.accept() {
                if let Err(e) = api::handle(shared, conn) {
                    tracing::debug!("{}: UAPI client: {e}", shared.name);
                }
            }
        }
        datapath::tick(shared, &mut timers);
        if Instant::now() >= next_second {
            next_second += Duration::from_secs(1);
            if !path.exists() {
                tracing::info!("{}: its UAPI socket was removed; stopping", shared.name);
                shared.stop();
            }
            if let Some(id) = &shared.snapshot().identity {
                id.limiter.reset_count();
            }
        }
    }
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&path);
}
