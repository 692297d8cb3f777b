//! IP address management without a single writer (Calico's idea): a
//! network's subnet is cut into blocks; a node claims whole blocks in the
//! store by compare-and-swap and hands out addresses inside its own blocks
//! with no further coordination. No /24 ceiling: a /16 holds 1024 blocks of
//! 64. Addresses are claimed in the store too (one key each), so a released
//! address is free for reuse at once and a restarted node finds what it had.
//!
//! Keys: `ipam/<network>/block/<block>` = owning node, and
//! `ipam/<network>/addr/<block>/<address>` = owner (`<node>/<endpoint>`),
//! where `<block>` is the block's first address: a node reads only its own
//! blocks' addresses to allocate.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::store::{Store, StoreError};

/// Prefix length of a block: 64 addresses.
pub const BLOCK_PREFIX: u8 = 26;

/// Why no address could be had.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every block is claimed and this node's are full.
    #[error("network `{network}` ({subnet}) has no free address left")]
    Exhausted {
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// The address is not in the subnet or is reserved.
    #[error("address {addr} cannot be used in network `{network}` ({subnet}): {why}")]
    Unusable {
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The address asked for.
        addr: Ipv4Addr,
        /// Why.
        why: &'static str,
    },
    /// The address belongs to someone else.
    #[error("address {addr} in network `{network}` is taken by {owner}")]
    Taken {
        /// The network.
        network: String,
        /// The address.
        addr: Ipv4Addr,
        /// Who has it.
        owner: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The blocks of `subnet`, in order (one block if the subnet is smaller).
pub fn blocks(subnet: Ipv4Net) -> Vec<Ipv4Net> {
    if subnet.prefix_len() >= BLOCK_PREFIX {
        return vec![subnet.trunc()];
    }
    subnet
        .trunc()
        .subnets(BLOCK_PREFIX)
        .map(|s| s.collect())
        .unwrap_or_default()
}

/// Addresses no endpoint may take: the network and broadcast addresses
/// (for subnets wider than /31) and the gateway.
pub fn reserved(subnet: Ipv4Net, gateway: Ipv4Addr, addr: Ipv4Addr) -> Option<&'static str> {
    if !subnet.contains(&addr) {
        Some("outside the subnet")
    } else if addr == gateway {
        Some("it is the gateway")
    } else if subnet.prefix_len() < 31 && (addr == subnet.network() || addr == subnet.broadcast()) {
        Some("it is the network or broadcast address")
    } else {
        None
    }
}

/// The first address of `block` that is neither reserved nor in `used`.
pub fn first_free(
    block: Ipv4Net,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let (lo, hi) = (u32::from(block.network()), u32::from(block.broadcast()));
    (lo..=hi)
        .map(Ipv4Addr::from)
        .find(|a| reserved(subnet, gateway, *a).is_none() && !used.contains(a))
}

/// One network's allocator on one node.
#[derive(Debug, Clone)]
pub struct Ipam {
    /// The network's name.
    pub network: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its gateway (never handed out).
    pub gateway: Ipv4Addr,
    /// This node's name.
    pub node: String,
}

impl Ipam {
    fn block_key(&self, b: &Ipv4Net) -> String {
        format!("ipam/{}/block/{}", self.network, b.network())
    }

    /// The block holding `a`.
    fn block_of(&self, a: Ipv4Addr) -> Ipv4Net {
        if self.subnet.prefix_len() >= BLOCK_PREFIX {
            return self.subnet.trunc();
        }
        Ipv4Net::new(a, BLOCK_PREFIX)
            .map(|n| n.trunc())
            .unwrap_or(self.subnet)
    }

    fn addr_key(&self, a: Ipv4Addr) -> String {
        format!(
            "ipam/{}/addr/{}/{a}",
            self.network,
            self.block_of(a).network()
        )
    }

    /// The blocks this node owns, in order.
    pub async fn my_blocks(&self, store: &dyn Store) -> Result<Vec<Ipv4Net>, IpamError> {
        let (entries, _) = store
            .range(&format!("ipam/{}/block/", self.network))
            .await?;
        let mine: BTreeSet<Ipv4Addr> = entries
            .iter()
            .filter(|e| e.value == self.node.as_bytes())
            .filter_map(|e| e.key.rsplit('/').next()?.parse().ok())
            .collect();
        Ok(blocks(self.subnet)
            .into_iter()
            .filter(|b| mine.contains(&b.network()))
            .collect())
    }

    /// Addresses taken in `block`.
    async fn used(
        &self,
        store: &dyn Store,
        block: Ipv4Net,
    ) -> Result<BTreeSet<Ipv4Addr>, IpamError> {
        let prefix = format!("ipam/{}/addr/{}/", self.network, block.network());
        let (entries, _) = store.range(&prefix).await?;
        Ok(entries
            .iter()
            .filter_map(|e| e.key.rsplit('/').next()?.parse().ok())
            .collect())
    }

    /// The address `owner` already holds in this node's blocks, if any.
    pub async fn find(
        &self,
        store: &dyn Store,
        owner: &str,
    ) -> Result<Option<Ipv4Addr>, IpamError> {
        let value = format!("{}/{owner}", self.node).into_bytes();
        for b in self.my_blocks(store).await? {
            let prefix = format!("ipam/{}/addr/{}/", self.network, b.network());
            let (entries, _) = store.range(&prefix).await?;
            if let Some(a) = entries
                .iter()
                .filter(|e| e.value == value)
                .find_map(|e| e.key.rsplit('/').next()?.parse().ok())
            {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// Hands out an address to `owner`: the one it already holds (so a
    /// restarted node gets back what it had), else one from this node's
    /// blocks, else one from a newly claimed block.
    pub async fn allocate(&self, store: &dyn Store, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(a) = self.find(store, owner).await? {
            return Ok(a);
        }
        loop {
            let mut candidate = None;
            for b in self.my_blocks(store).await? {
                let used = self.used(store, b).await?;
                if let Some(a) = first_free(b, self.subnet, self.gateway, &used) {
                    candidate = Some(a);
                    break;
                }
            }
            let addr = match candidate {
                Some(a) => a,
                None => {
                    self.claim_block(store).await?;
                    continue;
                }
            };
            let value = format!("{}/{owner}", self.node).into_bytes();
            if store.put_if(&self.addr_key(addr), 0, value, 0).await? {
                return Ok(addr);
            }
            // Lost a race for this address (a static claim): look again.
        }
    }

    async fn claim_block(&self, store: &dyn Store) -> Result<Ipv4Net, IpamError> {
        let (entries, _) = store
            .range(&format!("ipam/{}/block/", self.network))
            .await?;
        let taken: BTreeSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        for b in blocks(self.subnet) {
            let key = self.block_key(&b);
            if taken.contains(key.as_str()) {
                continue;
            }
            if store
                .put_if(&key, 0, self.node.clone().into_bytes(), 0)
                .await?
            {
                tracing::info!(network = %self.network, node = %self.node, block = %b, "claimed an address block");
                return Ok(b);
            }
        }
        Err(IpamError::Exhausted {
            network: self.network.clone(),
            subnet: self.subnet,
        })
    }

    /// Claims a specific address for `owner` (a static IP or a VIP).
    pub async fn claim(
        &self,
        store: &dyn Store,
        addr: Ipv4Addr,
        owner: &str,
    ) -> Result<(), IpamError> {
        if let Some(why) = reserved(self.subnet, self.gateway, addr) {
            return Err(IpamError::Unusable {
                network: self.network.clone(),
                subnet: self.subnet,
                addr,
                why,
            });
        }
        let value = format!("{}/{owner}", self.node);
        if store
            .put_if(&self.addr_key(addr), 0, value.clone().into_bytes(), 0)
            .await?
        {
            return Ok(());
        }
        let (e, _) = store.range(&self.addr_key(addr)).await?;
        let current = e
            .first()
            .map(|e| String::from_utf8_lossy(&e.value).to_string())
            .unwrap_or_default();
        if current == value {
            return Ok(());
        }
        Err(IpamError::Taken {
            network: self.network.clone(),
            addr,
            owner: current,
        })
    }

    /// Gives an address back; it can be handed out again at once.
    pub async fn release(&self, store: &dyn Store, addr: Ipv4Addr) -> Result<(), IpamError> {
        store.delete(&self.addr_key(addr)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use std::sync::Arc;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn block_math() {
        assert_eq!(blocks(net("10.77.0.0/16")).len(), 1024);
        assert_eq!(blocks(net("10.77.0.0/24")).len(), 4);
        assert_eq!(blocks(net("10.77.0.0/28")), vec![net("10.77.0.0/28")]);
        let s = net("10.77.0.0/24");
        let g: Ipv4Addr = "10.77.0.1".parse().unwrap();
        assert_eq!(
            first_free(net("10.77.0.0/26"), s, g, &BTreeSet::new()),
            Some("10.77.0.2".parse().unwrap())
        );
        let used: BTreeSet<Ipv4Addr> = ["10.77.0.192".parse().unwrap()].into();
        assert_eq!(
            first_free(net("10.77.0.192/26"), s, g, &used),
            Some("10.77.0.193".parse().unwrap())
        );
        // The broadcast address is never handed out.
        let full: BTreeSet<Ipv4Addr> = (192..=254).map(|i| Ipv4Addr::new(10, 77, 0, i)).collect();
        assert_eq!(first_free(net("10.77.0.192/26"), s, g, &full), None);
        assert!(reserved(s, g, "10.77.1.5".parse().unwrap()).is_some());
    }

    fn ipam(node: &str, subnet: &str) -> Ipam {
        let subnet = net(subnet);
        Ipam {
            network: "front".into(),
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            node: node.into(),
        }
    }

    #[tokio::test]
    async fn nodes_allocate_from_their_own_blocks_concurrently() {
        let store = EmbeddedStore::ephemeral();
        let mut tasks = Vec::new();
        for n in ["n1", "n2", "n3"] {
            let store: Arc<EmbeddedStore> = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let i = ipam(n, "10.77.0.0/16");
                let mut got = Vec::new();
                for k in 0..700 {
                    got.push(i.allocate(store.as_ref(), &format!("t{k}")).await.unwrap());
                }
                got
            }));
        }
        let mut all = BTreeSet::new();
        for t in tasks {
            let got = t.await.unwrap();
            // 700 addresses: well past a /24, from 11 blocks of 64.
            for a in &got {
                assert!(all.insert(*a), "{a} handed out twice");
            }
        }
        assert_eq!(all.len(), 2100);
        // Blocks are disjoint per node.
        let b1 = ipam("n1", "10.77.0.0/16")
            .my_blocks(store.as_ref())
            .await
            .unwrap();
        let b2 = ipam("n2", "10.77.0.0/16")
            .my_blocks(store.as_ref())
            .await
            .unwrap();
        assert!(b1.iter().all(|b| !b2.contains(b)));
        assert_eq!(b1.len(), 11);
    }

    #[tokio::test]
    async fn released_addresses_are_reused_and_exhaustion_is_an_error() {
        let store = EmbeddedStore::ephemeral();
        let i = ipam("n1", "10.9.0.0/29"); // .2 to .6: five addresses
        let got: Vec<Ipv4Addr> = {
            let mut v = Vec::new();
            for k in 0..5 {
                v.push(i.allocate(store.as_ref(), &format!("t{k}")).await.unwrap());
            }
            v
        };
        assert_eq!(got[0], "10.9.0.2".parse::<Ipv4Addr>().unwrap());
        // An owner asking again (a restarted node) gets what it holds.
        assert_eq!(i.allocate(store.as_ref(), "t3").await.unwrap(), got[3]);
        let err = i.allocate(store.as_ref(), "t5").await.unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
        i.release(store.as_ref(), got[2]).await.unwrap();
        assert_eq!(i.allocate(store.as_ref(), "t6").await.unwrap(), got[2]);
    }

    #[tokio::test]
    async fn static_claims_are_checked() {
        let store = EmbeddedStore::ephemeral();
        let i = ipam("n1", "10.77.0.0/24");
        let vip: Ipv4Addr = "10.77.0.200".parse().unwrap();
        i.claim(store.as_ref(), vip, "vip:web").await.unwrap();
        // The same owner again is fine; another is told who has it.
        i.claim(store.as_ref(), vip, "vip:web").await.unwrap();
        let err = i.claim(store.as_ref(), vip, "vip:api").await.unwrap_err();
        assert!(err.to_string().contains("taken by n1/vip:web"), "{err}");
        let err = i
            .claim(store.as_ref(), "10.77.0.1".parse().unwrap(), "x")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("gateway"), "{err}");
        // Allocation steps around a claimed address.
        let other = ipam("n1", "10.77.0.0/24");
        for k in 0..250 {
            let a = other
                .allocate(store.as_ref(), &format!("t{k}"))
                .await
                .unwrap();
            assert_ne!(a, vip);
        }
    }
}
