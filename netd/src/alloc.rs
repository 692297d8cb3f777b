//! Cluster-wide allocations by compare-and-swap, with no single writer:
//! VXLAN network identifiers (from 4096 up, as Docker does) and service
//! VIPs (from the network's subnet, through [`Ipam`] with the cluster as
//! the block owner).
//!
//! Keys: `alloc/vni/<vni>` = network name.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::ipam::{Ipam, IpamError};
use crate::store::{Store, StoreError};

/// The first VNI handed out.
pub const FIRST_VNI: u32 = 4096;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The block owner name VIPs are allocated under.
pub const VIP_OWNER: &str = "cluster-vips";

/// An allocation that failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The VNI asked for is held by another network.
    #[error("VNI {vni} is already used by network `{owner}`")]
    VniTaken {
        /// The VNI.
        vni: u32,
        /// The network holding it.
        owner: String,
    },
    /// A VNI outside 1..=2^24-1.
    #[error("VNI {0} is out of range (1 to 16777215)")]
    VniRange(u32),
    /// Every VNI is taken.
    #[error("no VNI left")]
    VniExhausted,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Address allocation failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

fn vni_key(vni: u32) -> String {
    format!("alloc/vni/{vni}")
}

async fn vnis(store: &dyn Store) -> Result<Vec<(u32, String)>, StoreError> {
    let (entries, _) = store.range("alloc/vni/").await?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            Some((
                e.key.rsplit('/').next()?.parse().ok()?,
                String::from_utf8_lossy(&e.value).to_string(),
            ))
        })
        .collect())
}

/// The VNI of `network`: the one it already holds, the one asked for if
/// free, or the lowest free one from [`FIRST_VNI`].
pub async fn vni(store: &dyn Store, network: &str, wanted: Option<u32>) -> Result<u32, AllocError> {
    loop {
        let held = vnis(store).await?;
        if let Some((v, _)) = held
            .iter()
            .find(|(v, n)| n == network && wanted.is_none_or(|w| w == *v))
        {
            return Ok(*v);
        }
        let candidate = match wanted {
            Some(w) if w == 0 || w > MAX_VNI => return Err(AllocError::VniRange(w)),
            Some(w) => {
                if let Some((_, owner)) = held.iter().find(|(v, _)| *v == w) {
                    return Err(AllocError::VniTaken {
                        vni: w,
                        owner: owner.clone(),
                    });
                }
                w
            }
            None => {
                let taken: BTreeSet<u32> = held.iter().map(|(v, _)| *v).collect();
                (FIRST_VNI..=MAX_VNI)
                    .find(|v| !taken.contains(v))
                    .ok_or(AllocError::VniExhausted)?
            }
        };
        if store
            .put_if(&vni_key(candidate), 0, network.as_bytes().to_vec(), 0)
            .await?
        {
            return Ok(candidate);
        }
        // Another writer took it between the read and the write: look again.
    }
}

/// Gives `network`'s VNI back.
pub async fn release_vni(store: &dyn Store, network: &str) -> Result<(), AllocError> {
    for (v, n) in vnis(store).await? {
        if n == network {
            store.delete(&vni_key(v)).await?;
        }
    }
    Ok(())
}

/// A VIP for `service` in the network `ipam` serves, or the one asked for.
pub async fn vip(
    store: &dyn Store,
    ipam: &Ipam,
    service: &str,
    wanted: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, AllocError> {
    let vips = Ipam {
        node: VIP_OWNER.to_string(),
        ..ipam.clone()
    };
    let owner = format!("vip:{service}");
    match wanted {
        Some(a) => {
            vips.claim(store, a, &owner).await?;
            Ok(a)
        }
        None => Ok(vips.allocate(store, &owner).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn vnis_are_unique_under_concurrency_and_stable_per_network() {
        let store = EmbeddedStore::ephemeral();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                vni(s.as_ref(), &format!("net{i}"), None).await.unwrap()
            }));
        }
        let mut got = BTreeSet::new();
        for t in tasks {
            assert!(got.insert(t.await.unwrap()));
        }
        assert_eq!(
            got.iter().copied().collect::<Vec<_>>(),
            (4096..4116).collect::<Vec<_>>()
        );
        // Asking again returns the same one.
        let v = vni(store.as_ref(), "net3", None).await.unwrap();
        assert_eq!(vni(store.as_ref(), "net3", None).await.unwrap(), v);
        // A taken VNI is refused naming its holder; released ones are reused.
        let err = vni(store.as_ref(), "other", Some(v)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("VNI {v} is already used by network `net3`")
        );
        release_vni(store.as_ref(), "net3").await.unwrap();
        assert_eq!(vni(store.as_ref(), "other", None).await.unwrap(), v);
        assert!(matches!(
            vni(store.as_ref(), "x", Some(1 << 24)).await,
            Err(AllocError::VniRange(_))
        ));
    }

    #[tokio::test]
    async fn vips_come_from_the_subnet_and_never_collide_with_endpoints() {
        let store = EmbeddedStore::ephemeral();
        let net = Ipam {
            network: "front".into(),
            subnet: "10.77.0.0/24".parse().unwrap(),
            gateway: "10.77.0.1".parse().unwrap(),
            node: "n1".into(),
        };
        let v1 = vip(store.as_ref(), &net, "web", None).await.unwrap();
        let v2 = vip(store.as_ref(), &net, "api", None).await.unwrap();
        assert_ne!(v1, v2);
        let ep = net.allocate(store.as_ref(), "web.1").await.unwrap();
        assert!(ep != v1 && ep != v2);
        let fixed: Ipv4Addr = "10.77.0.200".parse().unwrap();
        assert_eq!(
            vip(store.as_ref(), &net, "db", Some(fixed)).await.unwrap(),
            fixed
        );
        assert!(vip(store.as_ref(), &net, "cache", Some(fixed))
            .await
            .is_err());
    }
}
