//! The rules between items of a [`Config`]: checked before anything touches
//! the kernel, so a bad file changes nothing.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::config::{Config, Network};
use crate::error::ConfigError;
use crate::mac::Mac;

/// Checks `config`. `netns_exists` answers whether a namespace (a name under
/// /run/netns or a path) exists; see [`crate::netns::exists`].
pub fn validate(config: &Config, netns_exists: &dyn Fn(&str) -> bool) -> Result<(), ConfigError> {
    check_name("node", &config.node.name, 32)?;
    if let (Some(wg), true) = (&config.wireguard, config.needs_mesh()) {
        crate::validate_mesh::check_wireguard(wg)?;
    }
    if let Some(ns) = &config.node.netns {
        check_netns_name(&format!("node `{}`", config.node.name), ns)?;
        if !netns_exists(ns) {
            return Err(ConfigError::MissingNodeNetns {
                node: config.node.name.clone(),
                netns: ns.clone(),
            });
        }
    }
    let mut interfaces: HashMap<(String, String), String> = HashMap::new();
    for (i, net) in config.networks.iter().enumerate() {
        let item = format!("network `{}`", net.name);
        check_name("network", &net.name, 32)?;
        for earlier in &config.networks[..i] {
            if earlier.name == net.name {
                return Err(ConfigError::DuplicateNetwork(net.name.clone()));
            }
            if earlier.vni == net.vni {
                return Err(ConfigError::VniReused {
                    network: net.name.clone(),
                    vni: net.vni,
                    other: earlier.name.clone(),
                });
            }
            if earlier.subnet.contains(&net.subnet.network())
                || net.subnet.contains(&earlier.subnet.network())
            {
                return Err(ConfigError::Overlap {
                    network: net.name.clone(),
                    subnet: net.subnet,
                    other: earlier.name.clone(),
                    other_subnet: earlier.subnet,
                });
            }
        }
        if net.vni == 0 || net.vni > 0x00ff_ffff {
            return Err(invalid(
                &item,
                format!("vni {} is outside 1..=16777215", net.vni),
            ));
        }
        if net.encrypted {
            let Some(wg) = &config.wireguard else {
                return Err(invalid(
                    &item,
                    "encrypted = true needs a [wireguard] section".into(),
                ));
            };
            crate::validate_mesh::check_encrypted_network(wg, net)?;
        }
        if let Some(mtu) = net.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(&item, format!("mtu {mtu} is outside 68..=65535")));
            }
        }
        check_addresses(net)?;
        check_macs(net)?;
        for (j, ep) in net.endpoints.iter().enumerate() {
            let ep_item = format!("endpoint `{}` of network `{}`", ep.id, net.name);
            check_id(&ep_item, &ep.id)?;
            if net.endpoints[..j].iter().any(|e| e.id == ep.id) {
                return Err(ConfigError::DuplicateEndpoint {
                    network: net.name.clone(),
                    id: ep.id.clone(),
                });
            }
            check_netns_name(&ep_item, &ep.netns)?;
            check_ifname(&ep_item, ep.ifname())?;
            if !netns_exists(&ep.netns) {
                return Err(ConfigError::MissingNetns {
                    network: net.name.clone(),
                    id: ep.id.clone(),
                    netns: ep.netns.clone(),
                });
            }
            let key = (ep.netns.clone(), ep.ifname().to_string());
            if let Some(other) = interfaces.insert(key, ep_item.clone()) {
                return Err(ConfigError::DuplicateInterface {
                    item: ep_item,
                    netns: ep.netns.clone(),
                    ifname: ep.ifname().to_string(),
                    other,
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn invalid(item: &str, problem: String) -> ConfigError {
    ConfigError::Invalid {
        item: item.to_string(),
        problem,
    }
}

/// Every address of the network: inside the subnet, not its network or
/// broadcast address, and used once.
fn check_addresses(net: &Network) -> Result<(), ConfigError> {
    let mut holders: Vec<(Ipv4Addr, String)> = vec![(net.gateway, "gateway".into())];
    if let Some(lb) = net.lb_address {
        holders.push((lb, "lb_address".into()));
    }
    holders.extend(net.vips.iter().map(|v| (*v, format!("vip {v}"))));
    holders.extend(
        net.endpoints
            .iter()
            .map(|e| (e.ip, format!("endpoint `{}`", e.id))),
    );
    holders.extend(
        net.remotes
            .iter()
            .map(|r| (r.ip, format!("remote {}", r.ip))),
    );
    let reserved = net.subnet.prefix_len() < 31;
    for (i, (ip, holder)) in holders.iter().enumerate() {
        if !net.subnet.contains(ip)
            || (reserved && (*ip == net.subnet.network() || *ip == net.subnet.broadcast()))
        {
            return Err(invalid(
                &format!("network `{}`", net.name),
                format!(
                    "{holder} ({ip}) is not a host address of subnet {}",
                    net.subnet
                ),
            ));
        }
        if let Some((_, first)) = holders[..i].iter().find(|(other, _)| other == ip) {
            return Err(ConfigError::DuplicateIp {
                network: net.name.clone(),
                ip: *ip,
                first: first.clone(),
                second: holder.clone(),
            });
        }
    }
    Ok(())
}

fn check_macs(net: &Network) -> Result<(), ConfigError> {
    let mut holders: Vec<(Mac, String)> = Vec::new();
    if let Some(mac) = net.bridge_mac() {
        holders.push((mac, "br0 (from lb_address)".into()));
    }
    holders.extend(
        net.endpoints
            .iter()
            .map(|e| (e.mac(), format!("endpoint `{}`", e.id))),
    );
    holders.extend(
        net.remotes
            .iter()
            .map(|r| (r.mac(), format!("remote {}", r.ip))),
    );
    for (i, (mac, holder)) in holders.iter().enumerate() {
        if mac.is_multicast() || mac.is_zero() {
            return Err(invalid(
                &format!("network `{}`", net.name),
                format!("{holder}: MAC {mac} is not a unicast address"),
            ));
        }
        if let Some((_, first)) = holders[..i].iter().find(|(other, _)| other == mac) {
            return Err(ConfigError::DuplicateMac {
                network: net.name.clone(),
                mac: *mac,
                first: first.clone(),
                second: holder.clone(),
            });
        }
    }
    Ok(())
}

fn check_name(kind: &str, name: &str, max: usize) -> Result<(), ConfigError> {
    let bad = |problem| ConfigError::BadName {
        item: kind.to_string(),
        name: name.to_string(),
        problem,
    };
    if name.is_empty() || name.len() > max {
        return Err(bad("must be 1 to 32 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad("may hold only letters, digits, `-` and `_`"));
    }
    Ok(())
}

fn check_id(item: &str, id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName {
            item: item.to_string(),
            name: id.to_string(),
            problem: "must be 1 to 64 letters, digits, `-`, `_` or `.`",
        })
    }
}

fn check_netns_name(item: &str, ns: &str) -> Result<(), ConfigError> {
    let ok = if ns.starts_with('/') {
        ns.len() <= 128 && !ns.contains('@')
    } else {
        !ns.is_empty()
            && ns.len() <= 64
            && !ns.contains('/')
            && !ns.contains('@')
            && ns != "."
            && ns != ".."
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName {
            item: item.to_string(),
            name: ns.to_string(),
            problem:
                "is not a namespace name (at most 64 chars, no `/` or `@`) or an absolute path",
        })
    }
}

fn check_ifname(item: &str, ifname: &str) -> Result<(), ConfigError> {
    let ok = !ifname.is_empty()
        && ifname.len() <= 15
        && ifname
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName {
            item: item.to_string(),
            name: ifname.to_string(),
            problem: "is not an interface name (1 to 15 printable chars, no `/` or `:`)",
        })
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
