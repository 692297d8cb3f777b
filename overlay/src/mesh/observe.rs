//! Reads the node's WireGuard device: the link in the node namespace
//! (marked with shoal's alias) and its configuration.

use netlink_packet_route::link::InfoKind;

use super::{control, Backend, Mesh};
use crate::error::Error;
use crate::kernel::{addr, link};
use crate::names::Names;
use crate::netns::{self, NsTarget};

/// The device shoal made for this node, `None` if there is none. A link of
/// that name without shoal's alias is a conflict, never touched.
pub fn observe(names: &Names, node_ns: &NsTarget) -> Result<Option<Mesh>, Error> {
    let dev = names.wireguard();
    let alias = names.alias_wireguard();
    let place = node_ns.to_string();
    netns::run_in(node_ns, move |h| async move {
        let Some(l) = link::by_name(&h, &dev).await? else {
            return Ok(None);
        };
        if l.alias.as_deref() != Some(alias.as_str()) {
            return Err(Error::Conflict(format!(
                "{place} already has a link `{dev}` that shoal did not create; shoal needs that name for the node's WireGuard device"
            )));
        }
        let backend = match &l.kind {
            Some(InfoKind::Wireguard) => Backend::Kernel,
            Some(InfoKind::Tun) => Backend::Userspace,
            other => {
                return Err(Error::Conflict(format!(
                    "{dev} in {place} carries shoal's WireGuard alias but is a {other:?} link"
                )))
            }
        };
        let addresses = addr::list(&h, l.index)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        // Kernel reads must run here, inside the node namespace.
        let config = match control::read(&dev, backend) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{e}; the device will be rebuilt");
                None
            }
        };
        Ok(Some(Mesh {
            dev,
            backend,
            mtu: l.mtu,
            up: l.up,
            addresses,
            config,
            private_key: None,
        }))
    })
}
