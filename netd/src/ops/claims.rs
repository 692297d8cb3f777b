//! What a service holds cluster-wide, and how a service is committed.
//!
//! Published ports are claimed through `alloc/port/<port>` = service name
//! (put if absent); VIPs through [`alloc::vip`]. [`commit`] claims what the
//! new service needs beyond the old one, writes `svc/<name>` by
//! compare-and-swap, and only then releases what the old one held and the
//! new one does not. A failure or a lost race releases what the call
//! claimed (except what the service now stored holds: a concurrent call
//! for the same service may share it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::alloc::{self, VIP_OWNER};
use crate::ipam::Ipam;
use crate::model::{keys, EndpointMode, Network, Service};
use crate::store::Store;

use super::{get_json, get_raw, list_json, to_json, validate, OpError, Stored};

/// The key of published port `port`.
pub(crate) fn port_key(port: u16) -> String {
    format!("alloc/port/{port}")
}

/// Every claimed published port and its service.
pub(crate) async fn port_holders(store: &dyn Store) -> Result<BTreeMap<u16, String>, OpError> {
    let (entries, _) = store.range("alloc/port/").await?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let port = e.key.rsplit('/').next()?.parse().ok()?;
            Some((port, String::from_utf8_lossy(&e.value).into_owned()))
        })
        .collect())
}

/// Claims `port` for `svc`; `true` if this call made the claim, `false`
/// if `svc` already held it.
async fn claim_port(store: &dyn Store, svc: &str, port: u16) -> Result<bool, OpError> {
    let key = port_key(port);
    loop {
        if store.put_if(&key, 0, svc.as_bytes().to_vec(), 0).await? {
            return Ok(true);
        }
        match get_raw(store, &key).await? {
            None => continue, // released meanwhile: try again
            Some(e) if e.value == svc.as_bytes() => return Ok(false),
            Some(e) => {
                return Err(OpError::conflict(
                    "ports",
                    format!(
                        "published port {port} is already taken by service `{}`",
                        String::from_utf8_lossy(&e.value)
                    ),
                ))
            }
        }
    }
}

/// Releases `port` if `svc` holds it.
async fn release_port(store: &dyn Store, svc: &str, port: u16) -> Result<(), OpError> {
    let key = port_key(port);
    if let Some(e) = get_raw(store, &key).await? {
        if e.value == svc.as_bytes() {
            store.delete_if(&key, e.rev).await?;
        }
    }
    Ok(())
}

fn vip_ipam(net: &Network) -> Ipam {
    Ipam {
        network: net.name.clone(),
        subnet: net.subnet,
        gateway: net.gateway,
        node: VIP_OWNER.to_string(),
    }
}

/// The published ports of `svc`.
pub(crate) fn published(svc: &Service) -> BTreeSet<u16> {
    svc.ports.iter().filter_map(|p| p.published).collect()
}

/// The VIPs of `svc` by network (none in dnsrr mode).
pub(crate) fn vips(svc: &Service) -> BTreeSet<(String, Ipv4Addr)> {
    if svc.endpoint_mode != EndpointMode::Vip {
        return BTreeSet::new();
    }
    svc.networks
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), (*v)?)))
        .collect()
}

/// Ports and VIPs one call claimed.
#[derive(Debug, Default)]
struct Claims {
    ports: BTreeSet<u16>,
    vips: BTreeSet<(String, Ipv4Addr)>,
}

/// Releases `ports` and `vips` of service `name`, best effort (a failure
/// is logged; the caller has already succeeded or has its own error).
pub(crate) async fn release(
    store: &dyn Store,
    name: &str,
    ports: impl IntoIterator<Item = u16>,
    vips_held: impl IntoIterator<Item = (String, Ipv4Addr)>,
    nets: &BTreeMap<String, Network>,
) {
    for p in ports {
        if let Err(e) = release_port(store, name, p).await {
            tracing::warn!(service = name, port = p, error = %e, "could not release a published port");
        }
    }
    for (net, addr) in vips_held {
        let Some(n) = nets.get(&net) else { continue };
        if let Err(e) = vip_ipam(n).release(store, addr).await {
            tracing::warn!(service = name, network = net, %addr, error = %e, "could not release a VIP");
        }
    }
}

/// Everything `svc` holds (ports and VIPs), for its removal.
pub(crate) async fn release_service(store: &dyn Store, svc: &Service) -> Result<(), OpError> {
    let nets = networks(store).await?;
    release(store, &svc.name, published(svc), vips(svc), &nets).await;
    Ok(())
}

/// Every network by name.
pub(crate) async fn networks(store: &dyn Store) -> Result<BTreeMap<String, Network>, OpError> {
    Ok(list_json::<Network>(store, "net/")
        .await?
        .into_iter()
        .map(|(_, n)| (n.name.clone(), n))
        .collect())
}

/// Releases what this call claimed, except what the stored service holds.
async fn undo(store: &dyn Store, name: &str, claims: &Claims, nets: &BTreeMap<String, Network>) {
    let now = get_json::<Service>(store, &keys::service(name))
        .await
        .ok()
        .flatten()
        .map(|s| s.value);
    let (held_ports, held_vips) = now
        .as_ref()
        .map(|s| (published(s), vips(s)))
        .unwrap_or_default();
    let ports = claims.ports.difference(&held_ports).copied();
    let vips = claims.vips.difference(&held_vips).cloned();
    release(store, name, ports, vips, nets).await;
}

/// Writes `want` over `current` (absent: a create). `Ok(None)` means the
/// compare-and-swap lost to another writer: nothing is changed, read again
/// and retry. VIPs left `None` in vip mode are kept from `current` or
/// allocated.
pub(crate) async fn commit(
    store: &dyn Store,
    current: Option<&Stored<Service>>,
    mut want: Service,
) -> Result<Option<Service>, OpError> {
    validate::service(&want)?;
    let nets = networks(store).await?;
    if let Some(missing) = want.networks.keys().find(|n| !nets.contains_key(*n)) {
        return Err(OpError::NotFound {
            kind: "network",
            name: missing.clone(),
        });
    }
    let old = current.map(|c| &c.value);
    let (old_ports, old_vips) = old.map(|s| (published(s), vips(s))).unwrap_or_default();
    if want.endpoint_mode == EndpointMode::Vip {
        for (net, vip) in want.networks.iter_mut() {
            if vip.is_none() {
                *vip = old_vips.iter().find(|(n, _)| n == net).map(|(_, a)| *a);
            }
        }
    }
    let mut claims = Claims::default();
    if let Err(e) = claim(store, &mut want, &nets, &old_ports, &old_vips, &mut claims).await {
        undo(store, &want.name, &claims, &nets).await;
        return Err(e);
    }
    let key = keys::service(&want.name);
    let rev = current.map_or(0, |c| c.rev);
    match store.put_if(&key, rev, to_json(&want), 0).await {
        Ok(true) => {}
        Ok(false) => {
            undo(store, &want.name, &claims, &nets).await;
            return Ok(None);
        }
        Err(e) => {
            undo(store, &want.name, &claims, &nets).await;
            return Err(e.into());
        }
    }
    // A network removed meanwhile checks its services after deleting
    // itself; this checks the networks after writing: one of the two sees
    // the other and backs out.
    let added: Vec<&String> = want
        .networks
        .keys()
        .filter(|n| old.is_none_or(|o| !o.networks.contains_key(*n)))
        .collect();
    if !added.is_empty() {
        let gone = match networks(store).await {
            Ok(now) => added
                .iter()
                .find(|n| !now.contains_key(**n))
                .map(|n| OpError::NotFound {
                    kind: "network",
                    name: n.to_string(),
                }),
            Err(e) => Some(e),
        };
        if let Some(err) = gone {
            put_back(store, &key, old, &want).await;
            undo(store, &want.name, &claims, &nets).await;
            return Err(err);
        }
    }
    let new_ports = published(&want);
    let new_vips = vips(&want);
    let ports = old_ports.difference(&new_ports).copied();
    let freed = old_vips.difference(&new_vips).cloned();
    release(store, &want.name, ports, freed, &nets).await;
    Ok(Some(want))
}

/// Claims the ports and VIPs `want` needs beyond the old ones.
async fn claim(
    store: &dyn Store,
    want: &mut Service,
    nets: &BTreeMap<String, Network>,
    old_ports: &BTreeSet<u16>,
    old_vips: &BTreeSet<(String, Ipv4Addr)>,
    claims: &mut Claims,
) -> Result<(), OpError> {
    for p in published(want).difference(old_ports) {
        if claim_port(store, &want.name, *p).await? {
            claims.ports.insert(*p);
        }
    }
    if want.endpoint_mode != EndpointMode::Vip {
        return Ok(());
    }
    for (net, vip) in want.networks.iter_mut() {
        if vip.is_some_and(|a| old_vips.contains(&(net.clone(), a))) {
            continue;
        }
        let a = alloc::vip(store, &vip_ipam(&nets[net]), &want.name, *vip)
            .await
            .map_err(|e| OpError::from_alloc(e, "networks"))?;
        claims.vips.insert((net.clone(), a));
        *vip = Some(a);
    }
    Ok(())
}

/// Puts `svc/<name>` back to `old` (or removes it) if it still holds
/// `written`; best effort.
async fn put_back(store: &dyn Store, key: &str, old: Option<&Service>, written: &Service) {
    let res = match get_json::<Service>(store, key).await {
        Ok(Some(now)) if now.value == *written => match old {
            Some(o) => store.put_if(key, now.rev, to_json(o), 0).await,
            None => store.delete_if(key, now.rev).await,
        },
        Ok(_) => Ok(false),
        Err(e) => Err(crate::store::StoreError::Unavailable(e.to_string())),
    };
    if !matches!(res, Ok(true)) {
        tracing::warn!(key, "could not back out a service write");
    }
}
