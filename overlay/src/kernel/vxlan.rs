//! VXLAN devices.

use std::net::Ipv4Addr;

use netlink_packet_route::link::{InfoData, InfoVxlan};
use rtnetlink::{Handle, LinkVxlan};

use crate::error::Error;

/// The IANA VXLAN port.
pub const PORT: u16 = 4789;

/// The parameters shoal sets and checks on a VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VNI.
    pub vni: u32,
    /// Source address of the encapsulation (`local`).
    pub local: Option<Ipv4Addr>,
    /// UDP destination port.
    pub port: u16,
    /// Source-MAC learning.
    pub learning: bool,
    /// ARP proxy from the neighbour table.
    pub proxy: bool,
}

impl VxlanInfo {
    /// What shoal wants: learning off, proxy on, port 4789.
    pub fn wanted(vni: u32, local: Ipv4Addr) -> VxlanInfo {
        VxlanInfo {
            vni,
            local: Some(local),
            port: PORT,
            learning: false,
            proxy: true,
        }
    }

    /// Reads link info data; `None` unless it is a VXLAN's.
    pub fn from_data(data: &InfoData) -> Option<VxlanInfo> {
        let InfoData::Vxlan(attrs) = data else {
            return None;
        };
        let mut info = VxlanInfo {
            vni: 0,
            local: None,
            port: 0,
            learning: true,
            proxy: false,
        };
        for attr in attrs {
            match attr {
                InfoVxlan::Id(v) => info.vni = *v,
                InfoVxlan::Local(ip) => info.local = Some(*ip),
                InfoVxlan::Port(p) => info.port = *p,
                InfoVxlan::Learning(l) => info.learning = *l,
                InfoVxlan::Proxy(p) => info.proxy = *p,
                _ => {}
            }
        }
        Some(info)
    }
}

/// Equals `ip link add NAME type vxlan id VNI local LOCAL dstport 4789
/// nolearning proxy` followed by `mtu MTU`. The UDP socket is opened in the
/// namespace of the calling thread, and stays there when the device moves.
pub async fn create(h: &Handle, name: &str, info: VxlanInfo, mtu: u32) -> Result<(), Error> {
    let mut builder = LinkVxlan::new(name, info.vni)
        .port(info.port)
        .learning(info.learning)
        .proxy(info.proxy)
        .mtu(mtu);
    if let Some(local) = info.local {
        builder = builder.local(local);
    }
    h.link()
        .add(builder.build())
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip link add {name} type vxlan id {} local {:?} dstport {} nolearning proxy mtu {mtu}",
            info.vni, info.local, info.port
        )))
}
