//! Links of any kind: look up, list, delete and set attributes.

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use crate::error::{is_errno, Error};
use crate::kernel::collect;
use crate::kernel::vxlan::VxlanInfo;
use crate::mac::Mac;

/// What shoal reads of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `ip link set NAME alias ...`; shoal's mark.
    pub alias: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Ethernet address.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
    /// The bridge it is enslaved to.
    pub controller: Option<u32>,
    /// A veth's peer ifindex (in the peer's namespace).
    pub peer: Option<u32>,
    /// `bridge`, `vxlan`, `veth`, ...
    pub kind: Option<InfoKind>,
    /// VXLAN parameters, for a VXLAN device.
    pub vxlan: Option<VxlanInfo>,
}

impl Link {
    /// Reads a kernel link message.
    pub fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            alias: None,
            mtu: 0,
            mac: None,
            up: m.header.flags.contains(LinkFlags::Up),
            controller: None,
            peer: None,
            kind: None,
            vxlan: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Address(a) => link.mac = Mac::from_bytes(a),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Link(p) => link.peer = Some(*p),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.clone()),
                            LinkInfo::Data(d) => link.vxlan = VxlanInfo::from_data(d),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// Every link of the namespace; equals `ip -d link show`.
pub async fn list(h: &Handle) -> Result<Vec<Link>, Error> {
    let msgs = collect(h.link().get().execute())
        .await
        .map_err(Error::netlink("ip link show"))?;
    Ok(msgs.iter().map(Link::from_message).collect())
}

/// One link by name, `None` if absent; equals `ip -d link show NAME`.
pub async fn by_name(h: &Handle, name: &str) -> Result<Option<Link>, Error> {
    match collect(h.link().get().match_name(name.to_string()).execute()).await {
        Ok(msgs) => Ok(msgs.first().map(Link::from_message)),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(format!("ip link show {name}"))(e)),
    }
}

/// One link by index, `None` if absent.
pub async fn by_index(h: &Handle, index: u32) -> Result<Option<Link>, Error> {
    match collect(h.link().get().match_index(index).execute()).await {
        Ok(msgs) => Ok(msgs.first().map(Link::from_message)),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(format!("ip link show index {index}"))(e)),
    }
}

/// Equals `ip link del NAME`.
pub async fn delete(h: &Handle, link: &Link) -> Result<(), Error> {
    h.link()
        .del(link.index)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip link del {}", link.name)))
}

/// Equals `ip link set NAME up`.
pub async fn set_up(h: &Handle, index: u32, name: &str) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip link set {name} up")))
}

/// Equals `ip link set NAME mtu MTU`.
pub async fn set_mtu(h: &Handle, index: u32, name: &str, mtu: u32) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip link set {name} mtu {mtu}")))
}

/// Equals `ip link set NAME address MAC`.
pub async fn set_mac(
    h: &Handle,
    index: u32,
    name: &str,
    mac: crate::mac::Mac,
) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index)
        .address(mac.0.to_vec())
        .build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip link set {name} address {mac}")))
}

/// Equals `ip link set NAME alias ALIAS`.
pub async fn set_alias(h: &Handle, index: u32, name: &str, alias: &str) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index).alias(alias).build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!("ip link set {name} alias {alias}")))
}

/// Equals `ip link set NAME master BRIDGE`.
pub async fn set_master(h: &Handle, index: u32, name: &str, bridge: u32) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index).controller(bridge).build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip link set {name} master {bridge}"
        )))
}

/// Moves a link into the namespace open as `netns` and renames it there in
/// the same request; equals `ip link set NAME netns NS name NEW`.
pub async fn move_to(
    h: &Handle,
    index: u32,
    name: &str,
    netns: std::os::fd::RawFd,
    new_name: &str,
) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index)
        .setns_by_fd(netns)
        .name(new_name)
        .build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip link set {name} netns <fd {netns}> name {new_name}"
        )))
}
