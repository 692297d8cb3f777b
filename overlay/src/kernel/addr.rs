//! IPv4 addresses on links.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::Handle;

use crate::error::Error;
use crate::kernel::collect;

/// The IPv4 addresses on link `index`; equals `ip -4 addr show dev NAME`.
pub async fn list(h: &Handle, index: u32) -> Result<Vec<(Ipv4Net, AddressMessage)>, Error> {
    let msgs = collect(h.address().get().set_link_index_filter(index).execute())
        .await
        .map_err(Error::netlink(format!("ip addr show dev {index}")))?;
    let mut out = Vec::new();
    for m in msgs {
        if m.header.index != index {
            continue;
        }
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = addr {
            if let Ok(net) = Ipv4Net::new(ip, m.header.prefix_len) {
                out.push((net, m));
            }
        }
    }
    Ok(out)
}

/// Equals `ip addr add IP/PREFIX dev NAME`.
pub async fn add(h: &Handle, index: u32, name: &str, net: Ipv4Net) -> Result<(), Error> {
    h.address()
        .add(index, IpAddr::V4(net.addr()), net.prefix_len())
        .execute()
        .await
        .map_err(Error::netlink(format!("ip addr add {net} dev {name}")))
}

/// Equals `ip addr del IP/PREFIX dev NAME`.
pub async fn del(h: &Handle, name: &str, net: Ipv4Net, msg: AddressMessage) -> Result<(), Error> {
    h.address()
        .del(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip addr del {net} dev {name}")))
}

/// The address of `ip` in any of `nets`, for error messages and lookups.
pub fn find(nets: &[(Ipv4Net, AddressMessage)], ip: Ipv4Addr) -> Option<&AddressMessage> {
    nets.iter().find(|(n, _)| n.addr() == ip).map(|(_, m)| m)
}

/// The link holding `ip`, if any; equals `ip -o addr show to IP`.
pub async fn owner(h: &Handle, ip: Ipv4Addr) -> Result<Option<u32>, Error> {
    let msgs = collect(
        h.address()
            .get()
            .set_address_filter(IpAddr::V4(ip))
            .execute(),
    )
    .await
    .map_err(Error::netlink(format!("ip addr show to {ip}")))?;
    Ok(msgs
        .iter()
        .find(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == ip)
            })
        })
        .map(|m| m.header.index))
}
