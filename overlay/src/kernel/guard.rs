//! The mesh's guard: a blackhole route for the tunnel prefix at a metric
//! that marks it as shoal's. While the WireGuard device is up its own
//! prefix route (metric 0) wins; when the device is gone (its `run` process
//! stopped), an encrypted network's VXLAN packets hit the blackhole instead
//! of following a default route onto the underlay in clear.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::Error;
use crate::kernel::collect;

/// The metric that marks a blackhole route as shoal's guard.
pub const METRIC: u32 = 0xfff0_5ea1;

fn message(prefix: Ipv4Net) -> netlink_packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(prefix.network(), prefix.prefix_len())
        .kind(RouteType::BlackHole)
        .priority(METRIC)
        .build()
}

/// The guards in the main table; equals `ip route show type blackhole metric METRIC`.
pub async fn list(h: &Handle) -> Result<Vec<Ipv4Net>, Error> {
    let msgs = collect(
        h.route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute(),
    )
    .await
    .map_err(Error::netlink("ip route show type blackhole"))?;
    Ok(msgs
        .iter()
        .filter(|m| {
            m.header.kind == RouteType::BlackHole && m.header.table == RouteHeader::RT_TABLE_MAIN
        })
        .filter(|m| m.attributes.contains(&RouteAttribute::Priority(METRIC)))
        .filter_map(|m| {
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(netlink_packet_route::route::RouteAddress::Inet(d)) => {
                    Some(*d)
                }
                _ => None,
            })?;
            Ipv4Net::new(dst, m.header.destination_prefix_length).ok()
        })
        .collect())
}

/// Equals `ip route replace blackhole PREFIX metric METRIC`.
pub async fn add(h: &Handle, prefix: Ipv4Net) -> Result<(), Error> {
    h.route()
        .add(message(prefix))
        .replace()
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip route replace blackhole {prefix} metric {METRIC}"
        )))
}

/// Equals `ip route del blackhole PREFIX metric METRIC`.
pub async fn del(h: &Handle, prefix: Ipv4Net) -> Result<(), Error> {
    h.route()
        .del(message(prefix))
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip route del blackhole {prefix} metric {METRIC}"
        )))
}
