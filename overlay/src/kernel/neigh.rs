//! Permanent IPv4 neighbour (ARP) entries; on a VXLAN device with `proxy`
//! they are what the device answers ARP requests from.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;

use crate::error::Error;
use crate::kernel::collect;
use crate::mac::Mac;

/// The permanent entries on link `index`; equals
/// `ip neigh show dev NAME nud permanent`.
pub async fn list(h: &Handle, index: u32) -> Result<BTreeMap<Ipv4Addr, Mac>, Error> {
    let msgs = collect(
        h.neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute(),
    )
    .await
    .map_err(Error::netlink("ip neigh show"))?;
    let mut out = BTreeMap::new();
    for m in msgs {
        if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
                NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_bytes(l),
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            out.insert(ip, mac);
        }
    }
    Ok(out)
}

/// Equals `ip neigh replace IP lladdr MAC dev NAME nud permanent`.
pub async fn set(h: &Handle, index: u32, name: &str, ip: Ipv4Addr, mac: Mac) -> Result<(), Error> {
    h.neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(&mac.0)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip neigh replace {ip} lladdr {mac} dev {name} nud permanent"
        )))
}

/// Equals `ip neigh del IP dev NAME`.
pub async fn del(h: &Handle, index: u32, name: &str, ip: Ipv4Addr) -> Result<(), Error> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    h.neighbours()
        .del(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip neigh del {ip} dev {name}")))
}
