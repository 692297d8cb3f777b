//! Networks: create (subnet reserved, VNI allocated, then `net/<name>`
//! written, each step undone if a later one fails), list, get, and remove
//! (refused while a service or endpoint uses the network).

use std::collections::BTreeMap;
use std::fmt::Display;

use crate::alloc;
use crate::model::{keys, Endpoint, Network, Service};
use crate::spec::NetworkSpec;
use crate::store::Store;

use super::subnets::{self, Reserved};
use super::{get_json, get_raw, list_json, name_list, to_json, validate, Change, OpError};

/// Creates a network from `spec`. A network of that name that already
/// matches the spec is returned unchanged (a spec field left out matches
/// any value); one that differs is a conflict naming the field.
pub async fn create_network(store: &dyn Store, spec: NetworkSpec) -> Result<Network, OpError> {
    ensure_network(store, spec).await.map(|(n, _)| n)
}

/// [`create_network`], also saying whether it made the network.
pub(crate) async fn ensure_network(
    store: &dyn Store,
    spec: NetworkSpec,
) -> Result<(Network, Change), OpError> {
    validate::network_spec(&spec)?;
    let name = spec.name.as_str();
    let key = keys::network(name);
    loop {
        if let Some(cur) = get_json::<Network>(store, &key).await? {
            matches(&spec, &cur.value)?;
            return Ok((cur.value, Change::Unchanged));
        }
        let reserved = subnets::reserve(store, name, spec.subnet).await?;
        let held_before = held_vnis(store, name).await;
        let vni = match alloc::vni(store, name, spec.vni).await {
            Ok(v) => v,
            Err(e) => {
                undo(store, name, Some(reserved), None).await;
                return Err(OpError::from_alloc(e, "vni"));
            }
        };
        let fresh_vni = held_before.is_ok_and(|h| !h.contains(&vni));
        let net = Network {
            name: name.to_string(),
            subnet: reserved.subnet,
            gateway: spec
                .gateway
                .unwrap_or_else(|| validate::default_gateway(reserved.subnet)),
            vni,
            encrypted: spec.encrypted,
            mtu: spec.mtu,
            labels: spec.labels.clone(),
        };
        match store.put_if(&key, 0, to_json(&net), 0).await {
            Ok(true) => {
                tracing::info!(network = name, subnet = %net.subnet, vni, "created a network");
                return Ok((net, Change::Created));
            }
            Ok(false) => {
                // A create of the same name won: keep what it uses, drop
                // the rest, and compare with it.
                let winner = get_json::<Network>(store, &key).await.ok().flatten();
                let winner = winner.map(|w| w.value);
                let same_subnet = winner.as_ref().is_some_and(|w| w.subnet == net.subnet);
                let same_vni = winner.as_ref().is_some_and(|w| w.vni == vni);
                let vni = (fresh_vni && !same_vni).then_some(vni);
                undo(store, name, (!same_subnet).then_some(reserved), vni).await;
            }
            Err(e) => {
                undo(store, name, Some(reserved), fresh_vni.then_some(vni)).await;
                return Err(e.into());
            }
        }
    }
}

/// Whether `net` is what `spec` asks for; if not, a conflict naming the
/// first field that differs.
pub(crate) fn matches(spec: &NetworkSpec, net: &Network) -> Result<(), OpError> {
    fn differs(net: &str, field: &str, has: impl Display, asked: impl Display) -> OpError {
        OpError::conflict(
            field,
            format!("network `{net}` already exists with {field} {has} (asked: {asked})"),
        )
    }
    fn opt<T: Display>(v: &Option<T>) -> String {
        v.as_ref().map_or("none".into(), |v| v.to_string())
    }
    let n = &net.name;
    if spec.subnet.is_some_and(|s| s != net.subnet) {
        return Err(differs(n, "subnet", net.subnet, opt(&spec.subnet)));
    }
    if spec.gateway.is_some_and(|g| g != net.gateway) {
        return Err(differs(n, "gateway", net.gateway, opt(&spec.gateway)));
    }
    if spec.vni.is_some_and(|v| v != net.vni) {
        return Err(differs(n, "vni", net.vni, opt(&spec.vni)));
    }
    if spec.encrypted != net.encrypted {
        return Err(differs(n, "encrypted", net.encrypted, spec.encrypted));
    }
    if spec.mtu != net.mtu {
        return Err(differs(n, "mtu", opt(&net.mtu), opt(&spec.mtu)));
    }
    if spec.labels != net.labels {
        return Err(differs(
            n,
            "labels",
            labels(&net.labels),
            labels(&spec.labels),
        ));
    }
    Ok(())
}

fn labels(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "none".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The VNIs `name` holds.
async fn held_vnis(store: &dyn Store, name: &str) -> Result<Vec<u32>, OpError> {
    let (entries, _) = store.range("alloc/vni/").await?;
    Ok(entries
        .iter()
        .filter(|e| e.value == name.as_bytes())
        .filter_map(|e| e.key.rsplit('/').next()?.parse().ok())
        .collect())
}

/// Undoes a create's first steps, best effort (a failure is logged: the
/// caller reports the error that made it undo).
async fn undo(store: &dyn Store, name: &str, subnet: Option<Reserved>, vni: Option<u32>) {
    if let Some(r) = subnet.filter(|r| r.fresh) {
        if let Err(e) = subnets::release(store, name, r.subnet).await {
            tracing::warn!(network = name, error = %e, "could not drop a subnet reservation");
        }
    }
    if let Some(v) = vni {
        let key = format!("alloc/vni/{v}");
        let res = match get_raw(store, &key).await {
            Ok(Some(e)) if e.value == name.as_bytes() => store
                .delete_if(&key, e.rev)
                .await
                .map(drop)
                .map_err(Into::into),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::warn!(network = name, vni = v, error = %e, "could not release a VNI");
        }
    }
}

/// Every network, by name.
pub async fn list_networks(store: &dyn Store) -> Result<Vec<Network>, OpError> {
    Ok(list_json::<Network>(store, "net/")
        .await?
        .into_iter()
        .filter(|(k, n)| *k == keys::network(&n.name))
        .map(|(_, n)| n)
        .collect())
}

/// The network `name`.
pub async fn get_network(store: &dyn Store, name: &str) -> Result<Network, OpError> {
    match get_json::<Network>(store, &keys::network(name)).await? {
        Some(n) => Ok(n.value),
        None => Err(OpError::NotFound {
            kind: "network",
            name: name.to_string(),
        }),
    }
}

/// A conflict if a service or an endpoint uses network `name`.
pub(crate) async fn check_unused(store: &dyn Store, name: &str) -> Result<(), OpError> {
    let users: Vec<String> = list_json::<Service>(store, "svc/")
        .await?
        .into_iter()
        .filter(|(_, s)| s.networks.contains_key(name))
        .map(|(_, s)| s.name)
        .collect();
    if !users.is_empty() {
        return Err(OpError::conflict(
            "name",
            format!("network `{name}` is used by service {}", name_list(&users)),
        ));
    }
    let attached: Vec<String> = list_json::<Endpoint>(store, &format!("ep/{name}/"))
        .await?
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    if !attached.is_empty() {
        return Err(OpError::conflict(
            "name",
            format!(
                "network `{name}` still has endpoint {} attached",
                name_list(&attached)
            ),
        ));
    }
    Ok(())
}

/// Removes network `name`, refused while a service or endpoint uses it;
/// releases its VNI, its subnet reservation and its addresses
/// (`ipam/<name>/`). Returns the network removed.
pub async fn remove_network(store: &dyn Store, name: &str) -> Result<Network, OpError> {
    let key = keys::network(name);
    let net = loop {
        let Some(cur) = get_json::<Network>(store, &key).await? else {
            return Err(OpError::NotFound {
                kind: "network",
                name: name.to_string(),
            });
        };
        check_unused(store, name).await?;
        if !store.delete_if(&key, cur.rev).await? {
            continue;
        }
        // A service created meanwhile checks the network after writing
        // itself, and this checks the services after deleting: one of the
        // two sees the other and backs out.
        if let Err(e) = check_unused(store, name).await {
            if let Err(p) = store.put_if(&key, 0, to_json(&cur.value), 0).await {
                tracing::warn!(network = name, error = %p, "could not put back a network still in use");
            }
            return Err(e);
        }
        break cur.value;
    };
    if let Err(e) = release_all(store, &net).await {
        tracing::warn!(network = name, error = %e, "removed a network but not all it held");
    }
    tracing::info!(network = name, "removed a network");
    Ok(net)
}

async fn release_all(store: &dyn Store, net: &Network) -> Result<(), OpError> {
    alloc::release_vni(store, &net.name)
        .await
        .map_err(|e| OpError::from_alloc(e, "vni"))?;
    subnets::release(store, &net.name, net.subnet).await?;
    let (entries, _) = store.range(&format!("ipam/{}/", net.name)).await?;
    for e in entries {
        store.delete(&e.key).await?;
    }
    Ok(())
}
