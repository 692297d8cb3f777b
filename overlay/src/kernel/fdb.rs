//! Permanent forwarding entries of a VXLAN device: MAC -> remote VTEP.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;

use crate::error::Error;
use crate::kernel::collect;
use crate::mac::Mac;

/// The device's own permanent entries with a destination; equals
/// `bridge fdb show dev NAME self permanent`.
pub async fn list(h: &Handle, index: u32) -> Result<BTreeMap<Mac, Ipv4Addr>, Error> {
    let msgs = collect(
        h.neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute(),
    )
    .await
    .map_err(Error::netlink("bridge fdb show"))?;
    let mut out = BTreeMap::new();
    for m in msgs {
        let own = m.header.flags.contains(NeighbourFlags::Own)
            && !m.header.flags.contains(NeighbourFlags::Controller);
        if m.header.ifindex != index || !own || m.header.state != NeighbourState::Permanent {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                // In AF_BRIDGE messages the destination comes back raw.
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => dst = Some(*v),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_bytes(l),
                _ => {}
            }
        }
        if let (Some(dst), Some(mac)) = (dst, mac) {
            out.insert(mac, dst);
        }
    }
    Ok(out)
}

/// Equals `bridge fdb replace MAC dev NAME dst DST self permanent`.
pub async fn set(h: &Handle, index: u32, name: &str, mac: Mac, dst: Ipv4Addr) -> Result<(), Error> {
    h.neighbours()
        .add_bridge(index, &mac.0)
        .destination(IpAddr::V4(dst))
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "bridge fdb replace {mac} dev {name} dst {dst} self permanent"
        )))
}

/// Equals `bridge fdb del MAC dev NAME dst DST self`.
pub async fn del(h: &Handle, index: u32, name: &str, mac: Mac, dst: Ipv4Addr) -> Result<(), Error> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    h.neighbours()
        .del(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "bridge fdb del {mac} dev {name} dst {dst} self"
        )))
}
