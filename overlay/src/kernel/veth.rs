//! veth pairs.

use rtnetlink::{Handle, LinkVeth};

use crate::error::Error;

/// Equals `ip link add NAME type veth peer name PEER`.
pub async fn create(h: &Handle, name: &str, peer: &str) -> Result<(), Error> {
    h.link()
        .add(LinkVeth::new(name, peer).build())
        .execute()
        .await
        .map_err(Error::netlink(format!(
            "ip link add {name} type veth peer name {peer}"
        )))
}
