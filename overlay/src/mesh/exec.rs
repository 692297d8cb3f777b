//! Runs one [`MeshStep`]: link work on the node namespace's worker,
//! configuration through [`control`], userspace devices through a
//! [`DeviceHost`].

use std::time::{Duration, Instant};

use rtnetlink::{Handle, LinkWireguard};

use super::{control, uapi_socket, Backend, DeviceHost, MeshStep};
use crate::error::Error;
use crate::kernel::{addr, guard, link};
use crate::netns::{NsTarget, NsWorker};

async fn need(h: &Handle, dev: &str) -> Result<link::Link, Error> {
    link::by_name(h, dev)
        .await?
        .ok_or_else(|| Error::Conflict(format!("WireGuard device {dev} is missing")))
}

/// Runs `step`. `node` works in `node_ns`; `host` must be given to create
/// a userspace device (the caller checked that before anything changed).
pub fn run(
    step: &MeshStep,
    node: &NsWorker,
    node_ns: &NsTarget,
    alias: &str,
    host: Option<&mut DeviceHost>,
) -> Result<(), Error> {
    match step.clone() {
        MeshStep::Create { dev, backend, mtu } => {
            match backend {
                Backend::Kernel => {
                    let d = dev.clone();
                    node.call(move |h| async move {
                        h.link()
                            .add(LinkWireguard::new(&d).build())
                            .execute()
                            .await
                            .map_err(Error::netlink(format!("ip link add {d} type wireguard")))
                    })?;
                }
                Backend::Userspace => {
                    let host = host.ok_or_else(|| {
                        Error::Conflict(format!(
                            "{step}: only a `shoal-overlay run` process can host a userspace device"
                        ))
                    })?;
                    host.start(&dev, node_ns)?;
                }
            }
            let alias = alias.to_string();
            node.call(move |h| async move {
                let l = need(&h, &dev).await?;
                link::set_alias(&h, l.index, &dev, &alias).await?;
                link::set_mtu(&h, l.index, &dev, mtu).await?;
                link::set_up(&h, l.index, &dev).await
            })
        }
        MeshStep::Delete { dev, backend } => {
            if backend == Backend::Userspace {
                let hosted = host.is_some_and(|h| h.stop(&dev));
                if !hosted {
                    // Another process hosts it: removing its socket stops it.
                    let path = uapi_socket(&dev);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(Error::io(format!("rm {}", path.display()))(e))
                        }
                        _ => {}
                    }
                }
            }
            node.call(move |h| async move {
                if let Some(l) = link::by_name(&h, &dev).await? {
                    link::delete(&h, &l).await?;
                }
                // A TUN device goes when its last queue closes; wait for it.
                let deadline = Instant::now() + Duration::from_secs(5);
                while link::by_name(&h, &dev).await?.is_some() {
                    if Instant::now() > deadline {
                        return Err(Error::Conflict(format!(
                            "WireGuard device {dev} is still there 5 s after ip link del"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            })
        }
        MeshStep::SetLink { dev, mtu } => node.call(move |h| async move {
            let l = need(&h, &dev).await?;
            link::set_mtu(&h, l.index, &dev, mtu).await?;
            link::set_up(&h, l.index, &dev).await
        }),
        MeshStep::AddAddress { dev, address } => node.call(move |h| async move {
            let l = need(&h, &dev).await?;
            addr::add(&h, l.index, &dev, address).await
        }),
        MeshStep::DelAddress { dev, address } => node.call(move |h| async move {
            let l = need(&h, &dev).await?;
            match addr::list(&h, l.index)
                .await?
                .into_iter()
                .find(|(n, _)| *n == address)
            {
                Some((_, msg)) => addr::del(&h, &dev, address, msg).await,
                None => Ok(()),
            }
        }),
        MeshStep::AddGuard(p) => node.call(move |h| async move { guard::add(&h, p).await }),
        MeshStep::DelGuard(p) => node.call(move |h| async move { guard::del(&h, p).await }),
        MeshStep::SetInterface { backend, .. }
        | MeshStep::SetPeer { backend, .. }
        | MeshStep::RemovePeer { backend, .. } => match backend {
            // generic netlink: must be opened inside the node namespace
            Backend::Kernel => {
                let s = step.clone();
                node.call(move |_| async move { control::apply(&s) })
            }
            Backend::Userspace => control::apply(step),
        },
    }
}
