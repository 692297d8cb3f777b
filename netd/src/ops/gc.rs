//! Claims no stored object owns, as an operation cut short by a crash
//! leaves them: a subnet reserved or a VNI, published port or VIP claimed
//! for a network or service whose own key was never written, or whose
//! removal stopped half way; addresses of a network that is gone.
//!
//! [`collect_garbage`] removes them. An agent on the embedded store calls
//! it at start, before its API serves: nothing else writes then, so no
//! claim of an operation still in flight can be mistaken for garbage. (On
//! etcd other nodes write at any time, so it is not called there.)
//! Addresses of this node's tasks are the tasks' own sweep (`tasks`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::alloc::VIP_OWNER;
use crate::model::{Network, Service};
use crate::store::Store;

use super::claims::{self, published};
use super::{subnets, OpError};

/// Removes every claim no stored network or service owns; returns a line
/// per claim removed.
pub async fn collect_garbage(store: &dyn Store) -> Result<Vec<String>, OpError> {
    // An object that does not decode still owns its claims: with one, the
    // owners are not known, so nothing is collected.
    let nets: BTreeMap<String, Network> =
        owners(store, "net/", |n: &Network| n.name.clone()).await?;
    let svcs: BTreeMap<String, Service> =
        owners(store, "svc/", |s: &Service| s.name.clone()).await?;
    let mut removed = Vec::new();

    for (name, subnet) in subnets::reserved(store).await? {
        if nets.get(&name).is_none_or(|n| n.subnet != subnet) {
            subnets::release(store, &name, subnet).await?;
            removed.push(format!("subnet {subnet} reserved for network `{name}`"));
        }
    }
    let (vnis, _) = store.range("alloc/vni/").await?;
    for e in vnis {
        let owner = String::from_utf8_lossy(&e.value).into_owned();
        let vni: Option<u32> = e.key.rsplit('/').next().and_then(|v| v.parse().ok());
        if nets.get(&owner).is_none_or(|n| Some(n.vni) != vni)
            && store.delete_if(&e.key, e.mod_revision).await?
        {
            removed.push(format!("{} held for network `{owner}`", e.key));
        }
    }
    let (ports, _) = store.range("alloc/port/").await?;
    for e in ports {
        let owner = String::from_utf8_lossy(&e.value).into_owned();
        let port: Option<u16> = e.key.rsplit('/').next().and_then(|p| p.parse().ok());
        let owned = svcs
            .get(&owner)
            .zip(port)
            .is_some_and(|(s, p)| published(s).contains(&p));
        if !owned && store.delete_if(&e.key, e.mod_revision).await? {
            removed.push(format!("{} held for service `{owner}`", e.key));
        }
    }
    let (ipam, _) = store.range("ipam/").await?;
    let vip_prefix = format!("{VIP_OWNER}/vip:");
    for e in ipam {
        let mut parts = e.key.split('/');
        let (Some(_), Some(net)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !nets.contains_key(net) {
            if store.delete_if(&e.key, e.mod_revision).await? {
                removed.push(format!("{} of network `{net}`, which is gone", e.key));
            }
            continue;
        }
        let value = String::from_utf8_lossy(&e.value);
        let Some(svc) = value.strip_prefix(&vip_prefix) else {
            continue;
        };
        let addr: Option<Ipv4Addr> = e.key.rsplit('/').next().and_then(|a| a.parse().ok());
        let held = addr.map(|a| (net.to_string(), a));
        if svcs
            .get(svc)
            .zip(held)
            .is_none_or(|(s, held)| !claims::vips(s).contains(&held))
            && store.delete_if(&e.key, e.mod_revision).await?
        {
            removed.push(format!("VIP {} held for service `{svc}`", e.key));
        }
    }
    Ok(removed)
}

/// The objects under `prefix` by name. One that does not decode still
/// owns its claims, and its name is unknown: then nothing may be collected.
async fn owners<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
    name: impl Fn(&T) -> String,
) -> Result<BTreeMap<String, T>, OpError> {
    let (raw, _) = store.range(prefix).await?;
    let mut out = BTreeMap::new();
    for e in &raw {
        match serde_json::from_slice::<T>(&e.value) {
            Ok(v) => {
                out.insert(name(&v), v);
            }
            Err(err) => {
                return Err(OpError::Internal(format!(
                    "`{}` does not decode ({err}); collecting no claims",
                    e.key
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::network::create_network;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn claims_without_an_owner_go_and_the_rest_stay() {
        let s = EmbeddedStore::ephemeral();
        let spec = serde_json::from_value(serde_json::json!({
            "name": "front", "subnet": "10.77.0.0/24"
        }))
        .unwrap();
        let front = create_network(s.as_ref(), spec).await.unwrap();
        // What creates and removes cut short by a crash leave.
        s.put("alloc/vni/9999", b"ghost".to_vec(), 0).await.unwrap();
        s.put("alloc/port/8080", b"nosvc".to_vec(), 0)
            .await
            .unwrap();
        s.put("ipam/ghost/block/10.9.0.0", b"n1".to_vec(), 0)
            .await
            .unwrap();
        s.put(
            "ipam/front/addr/10.77.0.0/10.77.0.9",
            b"cluster-vips/vip:nosvc".to_vec(),
            0,
        )
        .await
        .unwrap();
        let before = s.range("").await.unwrap().0.len();
        let removed = collect_garbage(s.as_ref()).await.unwrap();
        assert_eq!(removed.len(), 4, "{removed:?}");
        let (left, _) = s.range("").await.unwrap();
        assert_eq!(left.len(), before - 4);
        let vni = format!("alloc/vni/{}", front.vni);
        assert!(
            left.iter().any(|e| e.key == vni),
            "the network's own VNI stays"
        );
        assert!(collect_garbage(s.as_ref()).await.unwrap().is_empty());

        // An object that does not decode still owns its claims: nothing goes.
        s.put("net/odd", b"{not json".to_vec(), 0).await.unwrap();
        s.put("alloc/vni/9998", b"odd".to_vec(), 0).await.unwrap();
        let e = collect_garbage(s.as_ref()).await.unwrap_err().to_string();
        assert!(e.contains("`net/odd` does not decode"), "{e}");
        assert_eq!(s.range("alloc/vni/9998").await.unwrap().0.len(), 1);
    }
}
