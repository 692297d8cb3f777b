//! [`DeviceHost`]: userspace WireGuard devices (boringtun) living in this
//! process.
//!
//! A device is created on a fresh thread that first enters the node
//! namespace: its TUN device and UDP sockets are made there, and the
//! threads boringtun spawns inherit that namespace, so everything it opens
//! later (a new listen port, per-peer sockets, extra TUN queues) lands in
//! the node namespace too. It is configured only through its UAPI socket
//! (`/var/run/wireguard/<dev>.sock`), like any other userspace WireGuard.
//!
//! A device lives as long as its host: dropping the host (the end of
//! `shoal-overlay run`) stops every device and removes its socket. Removing
//! the socket from outside (`shoal-overlay down`) also stops it, within a
//! second (boringtun watches its socket file).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use boringtun::device::{DeviceConfig, DeviceHandle};
use nix::sched::{setns, CloneFlags};

use super::uapi_socket;
use crate::error::Error;
use crate::netns::NsTarget;

/// How long stopping a device may take before it is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The userspace devices this process hosts, by name.
#[derive(Default)]
pub struct DeviceHost {
    devices: BTreeMap<String, DeviceHandle>,
}

impl std::fmt::Debug for DeviceHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHost")
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DeviceHost {
    /// A host with no devices.
    pub fn new() -> DeviceHost {
        DeviceHost::default()
    }

    /// The hosted devices that stopped on their own: their UAPI socket was
    /// removed (`shoal-overlay down`), or they caught a SIGTERM or SIGINT
    /// (boringtun listens for both on its own signalfd, and may take a
    /// process-directed signal before the process's own handler does).
    pub fn stopped(&self) -> Vec<String> {
        self.devices
            .keys()
            .filter(|dev| !super::uapi::answers(dev))
            .cloned()
            .collect()
    }

    /// True when this process hosts `dev`.
    pub fn hosts(&self, dev: &str) -> bool {
        self.devices.contains_key(dev)
    }

    /// Starts device `dev` inside `node_ns`, replacing one of that name this
    /// host already has (stopped first, so its cleanup cannot remove the new
    /// device's socket). The device is up but unconfigured: no key, a random
    /// port, no address, no peers.
    pub fn start(&mut self, dev: &str, node_ns: &NsTarget) -> Result<(), Error> {
        self.stop(dev);
        let what = format!("start userspace WireGuard {dev} in {node_ns}");
        let file = match node_ns {
            NsTarget::Current => None,
            NsTarget::Path(_) => Some(node_ns.open()?),
        };
        let name = dev.to_string();
        let config = DeviceConfig {
            n_threads: std::thread::available_parallelism()
                .map(|n| n.get().clamp(2, 4))
                .unwrap_or(2),
            use_connected_socket: true,
            use_multi_queue: true,
            uapi_fd: -1,
        };
        let label = what.clone();
        let handle = std::thread::Builder::new()
            .name(format!("wg start {dev}"))
            .spawn(move || -> Result<DeviceHandle, Error> {
                if let Some(f) = file {
                    setns(&f, CloneFlags::CLONE_NEWNET).map_err(Error::sys(label.clone()))?;
                }
                DeviceHandle::new(&name, config)
                    .map_err(|e| Error::Conflict(format!("{label}: {e:?}")))
            })
            .map_err(Error::io(what.clone()))?
            .join()
            .map_err(|_| Error::Worker(what))??;
        tracing::info!(
            "userspace WireGuard {dev} started in {node_ns}, UAPI {}",
            uapi_socket(dev).display()
        );
        self.devices.insert(dev.to_string(), handle);
        Ok(())
    }

    /// Stops `dev` if this host has it: removes its UAPI socket, waits for
    /// its threads (boringtun notices within a second), then frees the TUN
    /// device. Returns whether it was hosted here.
    pub fn stop(&mut self, dev: &str) -> bool {
        let Some(mut handle) = self.devices.remove(dev) else {
            return false;
        };
        let (done_tx, done_rx) = mpsc::channel();
        let name = dev.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("wg stop {dev}"))
            .spawn(move || {
                handle.clean();
                handle.wait();
                drop(handle);
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => {
                if done_rx.recv_timeout(STOP_GRACE).is_err() {
                    tracing::warn!("userspace WireGuard {name}: threads still running after {STOP_GRACE:?}; left to exit on their own");
                }
            }
            Err(e) => tracing::warn!("userspace WireGuard {name}: cannot spawn its stopper: {e}"),
        }
        let _ = std::fs::remove_file(uapi_socket(dev));
        true
    }
}

impl Drop for DeviceHost {
    fn drop(&mut self) {
        let names: Vec<String> = self.devices.keys().cloned().collect();
        for dev in names {
            self.stop(&dev);
        }
    }
}
