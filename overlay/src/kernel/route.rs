//! Routes: the container's default route, and the underlay lookups the MTU
//! is derived from.

use std::net::Ipv4Addr;

use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMetric};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::Error;
use crate::kernel::{collect, link};

/// The gateway of the main table's IPv4 default route through link `index`;
/// equals `ip route show default dev NAME`.
pub async fn default_gateway(h: &Handle, index: u32) -> Result<Option<Ipv4Addr>, Error> {
    let msgs = collect(
        h.route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute(),
    )
    .await
    .map_err(Error::netlink("ip route show"))?;
    for m in msgs {
        if m.header.table != RouteHeader::RT_TABLE_MAIN || m.header.destination_prefix_length != 0 {
            continue;
        }
        let oif = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let gw = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
            _ => None,
        });
        if oif == Some(index) {
            return Ok(gw);
        }
    }
    Ok(None)
}

/// Equals `ip route replace default via GW dev NAME`.
pub async fn set_default(h: &Handle, index: u32, name: &str, gw: Ipv4Addr) -> Result<(), Error> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gw)
        .output_interface(index)
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip route replace default via {gw} dev {name}"
        )))
}

/// The MTU of the path to `dst`: the route's `mtu` metric if it has one,
/// else the MTU of its output link; equals reading `ip route get DST`.
pub async fn mtu_towards(h: &Handle, dst: Ipv4Addr) -> Result<u32, Error> {
    let what = format!("ip route get {dst}");
    let req = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .build();
    let msgs = collect(h.route().get(req).execute())
        .await
        .map_err(Error::netlink(what.clone()))?;
    let m = msgs
        .first()
        .ok_or_else(|| Error::Conflict(format!("{what}: no route to the underlay peer")))?;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Metrics(ms) => {
                if let Some(mtu) = ms.iter().find_map(|x| match x {
                    RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                    _ => None,
                }) {
                    return Ok(mtu);
                }
            }
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let oif =
        oif.ok_or_else(|| Error::Conflict(format!("{what}: the route has no output link")))?;
    let l = link::by_index(h, oif)
        .await?
        .ok_or_else(|| Error::Conflict(format!("{what}: output link {oif} vanished")))?;
    Ok(l.mtu)
}
