//! The mesh's plan steps, and the diff that yields them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddrV4;

use ipnet::Ipv4Net;

use super::{uapi_socket, Backend, Mesh, MeshConfig, Secret};

/// One change to the node's WireGuard device. Each prints as the `ip` or
/// `wg` command it equals (keys other than public ones are never printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshStep {
    /// Create the device, set its MTU and bring it up.
    Create {
        /// Its name.
        dev: String,
        /// Kernel or userspace.
        backend: Backend,
        /// MTU.
        mtu: u32,
    },
    /// Remove the device (a userspace one: stop it and remove its socket).
    Delete {
        /// Its name.
        dev: String,
        /// Kernel or userspace.
        backend: Backend,
    },
    /// Set the MTU and bring it up.
    SetLink {
        /// Its name.
        dev: String,
        /// MTU.
        mtu: u32,
    },
    /// Add an address.
    AddAddress {
        /// Its name.
        dev: String,
        /// The address.
        address: Ipv4Net,
    },
    /// Remove an address.
    DelAddress {
        /// Its name.
        dev: String,
        /// The address.
        address: Ipv4Net,
    },
    /// Set the private key and listen port.
    SetInterface {
        /// Its name.
        dev: String,
        /// Kernel or userspace.
        backend: Backend,
        /// The key.
        private_key: Secret,
        /// UDP port.
        listen_port: u16,
    },
    /// Add a peer or change it in place (its session survives).
    SetPeer {
        /// Its name.
        dev: String,
        /// Kernel or userspace.
        backend: Backend,
        /// Base64 public key.
        public_key: String,
        /// Underlay endpoint.
        endpoint: Option<SocketAddrV4>,
        /// Allowed IPs, replacing the old ones.
        allowed_ips: Vec<Ipv4Net>,
    },
    /// Add the guard route for the tunnel prefix.
    AddGuard(Ipv4Net),
    /// Remove a guard route.
    DelGuard(Ipv4Net),
    /// Remove a peer.
    RemovePeer {
        /// Its name.
        dev: String,
        /// Kernel or userspace.
        backend: Backend,
        /// Base64 public key.
        public_key: String,
    },
}

/// The guard routes to remove and add: `want` holds the tunnel prefix of
/// the desired device, none when the node needs no mesh. Added before the
/// device, removed after it.
pub fn diff_guards(
    have: &BTreeSet<Ipv4Net>,
    want: Option<&Mesh>,
) -> (Vec<MeshStep>, Vec<MeshStep>) {
    let want: BTreeSet<Ipv4Net> = want
        .into_iter()
        .flat_map(|m| m.addresses.iter().map(|a| a.trunc()))
        .collect();
    let add = want
        .difference(have)
        .map(|p| MeshStep::AddGuard(*p))
        .collect();
    let del = have
        .difference(&want)
        .map(|p| MeshStep::DelGuard(*p))
        .collect();
    (add, del)
}

/// The steps from `have` to `want`. Unchanged peers produce no step, so
/// their sessions (and the flows inside them) are never disturbed.
pub fn diff(have: Option<&Mesh>, want: Option<&Mesh>) -> Vec<MeshStep> {
    let mut steps = Vec::new();
    let Some(want) = want else {
        if let Some(h) = have {
            steps.push(MeshStep::Delete {
                dev: h.dev.clone(),
                backend: h.backend,
            });
        }
        return steps;
    };
    let dev = want.dev.clone();
    let rebuild = match have {
        None => true,
        Some(h) => h.backend != want.backend || h.config.is_none(),
    };
    let empty = Mesh {
        config: Some(MeshConfig {
            public_key: None,
            listen_port: 0,
            peers: Default::default(),
        }),
        addresses: Default::default(),
        ..want.clone()
    };
    let have = match have {
        Some(h) if !rebuild => h,
        other => {
            if let Some(h) = other {
                steps.push(MeshStep::Delete {
                    dev: h.dev.clone(),
                    backend: h.backend,
                });
            }
            steps.push(MeshStep::Create {
                dev: dev.clone(),
                backend: want.backend,
                mtu: want.mtu,
            });
            &empty
        }
    };
    if !rebuild && (have.mtu != want.mtu || !have.up) {
        steps.push(MeshStep::SetLink {
            dev: dev.clone(),
            mtu: want.mtu,
        });
    }
    for a in have.addresses.difference(&want.addresses) {
        steps.push(MeshStep::DelAddress {
            dev: dev.clone(),
            address: *a,
        });
    }
    for a in want.addresses.difference(&have.addresses) {
        steps.push(MeshStep::AddAddress {
            dev: dev.clone(),
            address: *a,
        });
    }
    let (Some(hc), Some(wc)) = (&have.config, &want.config) else {
        return steps;
    };
    if hc.public_key != wc.public_key || hc.listen_port != wc.listen_port {
        if let Some(key) = &want.private_key {
            steps.push(MeshStep::SetInterface {
                dev: dev.clone(),
                backend: want.backend,
                private_key: key.clone(),
                listen_port: wc.listen_port,
            });
        }
    }
    for key in hc.peers.keys().filter(|k| !wc.peers.contains_key(*k)) {
        steps.push(MeshStep::RemovePeer {
            dev: dev.clone(),
            backend: want.backend,
            public_key: key.clone(),
        });
    }
    for (key, peer) in &wc.peers {
        if hc.peers.get(key) != Some(peer) {
            steps.push(MeshStep::SetPeer {
                dev: dev.clone(),
                backend: want.backend,
                public_key: key.clone(),
                endpoint: peer.endpoint,
                allowed_ips: peer.allowed_ips.iter().copied().collect(),
            });
        }
    }
    steps
}

impl MeshStep {
    /// True for the step that needs a [`super::DeviceHost`]: creating a
    /// userspace device.
    pub fn needs_host(&self) -> bool {
        matches!(
            self,
            MeshStep::Create {
                backend: Backend::Userspace,
                ..
            }
        )
    }
}

impl fmt::Display for MeshStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshStep::Create { dev, backend: Backend::Kernel, mtu } => write!(
                f,
                "ip link add {dev} type wireguard mtu {mtu}; ip link set {dev} up  # kernel WireGuard"
            ),
            MeshStep::Create { dev, backend: Backend::Userspace, mtu } => write!(
                f,
                "start userspace WireGuard {dev} (in this process, UAPI {}); ip link set {dev} mtu {mtu} up",
                uapi_socket(dev).display()
            ),
            MeshStep::Delete { dev, backend: Backend::Kernel } => write!(f, "ip link del {dev}"),
            MeshStep::Delete { dev, backend: Backend::Userspace } => write!(
                f,
                "stop userspace WireGuard {dev}: rm {}; ip link del {dev}",
                uapi_socket(dev).display()
            ),
            MeshStep::SetLink { dev, mtu } => write!(f, "ip link set {dev} mtu {mtu} up"),
            MeshStep::AddAddress { dev, address } => write!(f, "ip addr add {address} dev {dev}"),
            MeshStep::DelAddress { dev, address } => write!(f, "ip addr del {address} dev {dev}"),
            MeshStep::SetInterface { dev, listen_port, .. } => write!(
                f,
                "wg set {dev} private-key <from the file> listen-port {listen_port}"
            ),
            MeshStep::SetPeer { dev, public_key, endpoint, allowed_ips, .. } => {
                write!(f, "wg set {dev} peer {public_key}")?;
                if let Some(e) = endpoint {
                    write!(f, " endpoint {e}")?;
                }
                let ips: Vec<String> = allowed_ips.iter().map(|a| a.to_string()).collect();
                write!(f, " allowed-ips {}", ips.join(","))
            }
            MeshStep::AddGuard(p) => write!(
                f,
                "ip route replace blackhole {p} metric {}  # no clear fallback while the device is down",
                crate::kernel::guard::METRIC
            ),
            MeshStep::DelGuard(p) => write!(
                f,
                "ip route del blackhole {p} metric {}",
                crate::kernel::guard::METRIC
            ),
            MeshStep::RemovePeer { dev, public_key, .. } => {
                write!(f, "wg set {dev} peer {public_key} remove")
            }
        }
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
