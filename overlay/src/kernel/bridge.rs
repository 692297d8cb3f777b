//! Linux bridges.

use rtnetlink::{Handle, LinkBridge};

use crate::error::Error;
use crate::mac::Mac;

/// Equals `ip link add NAME type bridge mtu MTU [address MAC]` then
/// `ip link set NAME up`.
pub async fn create(h: &Handle, name: &str, mtu: u32, mac: Option<Mac>) -> Result<(), Error> {
    let mut builder = LinkBridge::new(name).mtu(mtu);
    if let Some(mac) = mac {
        builder = builder.address(mac.0.to_vec());
    }
    h.link()
        .add(builder.build())
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip link add {name} type bridge mtu {mtu}"
        )))
}
