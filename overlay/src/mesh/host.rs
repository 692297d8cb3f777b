//! [`DeviceHost`]: userspace WireGuard devices ([`Device`]) living in this
//! process.
//!
//! A device is created on a thread that first enters the node namespace:
//! its TUN device and UDP socket are made there, and its threads are born
//! there, so a socket it binds later (a new listen port) lands in the node
//! namespace too. It is configured only through its UAPI socket
//! (`/var/run/wireguard/<dev>.sock`), like any other userspace WireGuard.
//!
//! A device lives as long as its host: dropping the host (the end of
//! `shoal-overlay run`) stops every device and removes its socket. Removing
//! the socket from outside (`shoal-overlay down`) also stops it, within a
//! second (the device watches its socket file).

use std::collections::BTreeMap;
use std::time::Duration;

use super::device::Device;
use super::uapi_socket;
use crate::error::Error;
use crate::netns::NsTarget;

/// How long stopping a device may take before it is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The userspace devices this process hosts, by name.
#[derive(Default)]
pub struct DeviceHost {
    devices: BTreeMap<String, Device>,
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
    /// removed (`shoal-overlay down`).
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
    /// device's socket). The device exists but is unconfigured: no key, a
    /// random port, no address, no peers.
    pub fn start(&mut self, dev: &str, node_ns: &NsTarget) -> Result<(), Error> {
        self.stop(dev);
        let what = format!("start userspace WireGuard {dev} in {node_ns}");
        let file = match node_ns {
            NsTarget::Current => None,
            NsTarget::Path(_) => Some(node_ns.open()?),
        };
        let device = Device::start(dev, file).map_err(Error::io(what))?;
        tracing::info!(
            "userspace WireGuard {dev} started in {node_ns}, UAPI {}",
            uapi_socket(dev).display()
        );
        self.devices.insert(dev.to_string(), device);
        Ok(())
    }

    /// Stops `dev` if this host has it: its threads end (within a quarter
    /// second), its TUN device and UAPI socket go. Returns whether it was
    /// hosted here.
    pub fn stop(&mut self, dev: &str) -> bool {
        let Some(device) = self.devices.remove(dev) else {
            return false;
        };
        if !device.stop(STOP_GRACE) {
            tracing::warn!("userspace WireGuard {dev}: threads still running after {STOP_GRACE:?}; left to exit on their own");
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
