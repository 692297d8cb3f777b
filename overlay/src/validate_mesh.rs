//! The rules of the `[wireguard]` section, checked only when a network is
//! encrypted (the section may sit unused, with placeholder keys, otherwise).

use std::collections::HashSet;

use wireguard_control::Key;

use crate::config::{Network, WireGuard};
use crate::error::ConfigError;
use crate::validate::invalid;

fn key(item: &str, what: &str, b64: &str) -> Result<Key, ConfigError> {
    Key::from_base64(b64).map_err(|_| {
        invalid(
            item,
            format!("{what} `{b64}` is not a base64 WireGuard key (32 bytes; see `wg genkey`)"),
        )
    })
}

/// Keys, addresses and peers of the mesh.
pub fn check_wireguard(wg: &WireGuard) -> Result<(), ConfigError> {
    let item = "[wireguard]";
    let own_public = key(item, "private_key", &wg.private_key)?.get_public();
    let prefix = wg.tunnel_ip.prefix_len();
    if prefix > 30 {
        return Err(invalid(
            item,
            format!(
                "tunnel_ip {} must have a prefix of at most /30, to hold the peers' tunnel addresses",
                wg.tunnel_ip
            ),
        ));
    }
    let own = wg.tunnel_ip.addr();
    if own == wg.tunnel_ip.network() || own == wg.tunnel_ip.broadcast() {
        return Err(invalid(
            item,
            format!("tunnel_ip {} is not a host address", wg.tunnel_ip),
        ));
    }
    let mut keys = HashSet::new();
    let mut ips = HashSet::from([own]);
    for p in &wg.peers {
        let item = format!("[[wireguard.peer]] {}", p.tunnel_ip);
        let k = key(&item, "public_key", &p.public_key)?;
        if k == own_public {
            return Err(invalid(&item, "public_key is this node's own key".into()));
        }
        if !keys.insert(k.0) {
            return Err(invalid(
                &item,
                format!("public_key {} is given to two peers", p.public_key),
            ));
        }
        if !wg.tunnel_ip.contains(&p.tunnel_ip)
            || p.tunnel_ip == wg.tunnel_ip.network()
            || p.tunnel_ip == wg.tunnel_ip.broadcast()
        {
            return Err(invalid(
                &item,
                format!(
                    "tunnel_ip {} is not a host address of this node's mesh {}",
                    p.tunnel_ip,
                    wg.tunnel_ip.trunc()
                ),
            ));
        }
        if !ips.insert(p.tunnel_ip) {
            return Err(invalid(
                &item,
                format!("tunnel_ip {} is used twice in the mesh", p.tunnel_ip),
            ));
        }
    }
    Ok(())
}

/// Every remote of an encrypted network must sit behind a mesh peer: a
/// `node_ip` that is no peer's tunnel address would carry its VXLAN in clear.
pub fn check_encrypted_network(wg: &WireGuard, net: &Network) -> Result<(), ConfigError> {
    for r in &net.remotes {
        if !wg.peers.iter().any(|p| p.tunnel_ip == r.node_ip) {
            return Err(invalid(
                &format!("network `{}`", net.name),
                format!(
                    "encrypted, but remote {} has node_ip {}, which is no [[wireguard.peer]] tunnel_ip: its traffic would leave in clear",
                    r.ip, r.node_ip
                ),
            ));
        }
    }
    Ok(())
}
