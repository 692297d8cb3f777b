//! Subnet reservations: one key, `alloc/subnets`, holds a JSON map of
//! network name to subnet. A create reads it with its revision, checks
//! overlap, and writes it back only if nobody wrote in between; a lost race
//! reads again. With a single key, two overlapping creates can never both
//! commit, though the store has only single-key compare-and-swap.
//!
//! Stored networks (`net/*`) are checked as well, so a network written
//! without a reservation still blocks overlapping ones.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::Network;
use crate::store::{Revision, Store};

use super::{get_raw, list_json, to_json, OpError};

/// The key of the reservations.
pub(crate) const KEY: &str = "alloc/subnets";

/// Where networks without a subnet get theirs: the first free /24 of
/// 10.96.0.0/11.
pub const POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 11);
/// The prefix of subnets taken from [`POOL`].
pub const POOL_PREFIX: u8 = 24;

type Map = BTreeMap<String, Ipv4Net>;

async fn read(store: &dyn Store) -> Result<(Map, Revision), OpError> {
    let Some(raw) = get_raw(store, KEY).await? else {
        return Ok((Map::new(), 0));
    };
    match serde_json::from_slice(&raw.value) {
        Ok(map) => Ok((map, raw.rev)),
        Err(e) => Err(OpError::Unavailable(format!(
            "the subnet reservations in `{KEY}` do not decode ({e})"
        ))),
    }
}

fn overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Every subnet held by a network other than `name`: reserved or stored.
pub(crate) async fn taken(
    store: &dyn Store,
    map: &Map,
    name: &str,
) -> Result<Vec<(String, Ipv4Net)>, OpError> {
    let mut all: Vec<(String, Ipv4Net)> = map
        .iter()
        .filter(|(n, _)| *n != name)
        .map(|(n, s)| (n.clone(), *s))
        .collect();
    for (_, net) in list_json::<Network>(store, "net/").await? {
        if net.name != name && !all.iter().any(|(n, _)| *n == net.name) {
            all.push((net.name, net.subnet));
        }
    }
    Ok(all)
}

/// The first network in `taken` that `subnet` overlaps, as a conflict.
pub(crate) fn check_overlap(subnet: Ipv4Net, taken: &[(String, Ipv4Net)]) -> Result<(), OpError> {
    match taken.iter().find(|(_, s)| overlap(subnet, *s)) {
        Some((other, s)) => Err(OpError::conflict(
            "subnet",
            format!("subnet {subnet} overlaps network `{other}` ({s})"),
        )),
        None => Ok(()),
    }
}

/// A conflict if `subnet` overlaps a network other than `name`.
pub(crate) async fn check_free(
    store: &dyn Store,
    name: &str,
    subnet: Ipv4Net,
) -> Result<(), OpError> {
    let (map, _) = read(store).await?;
    check_overlap(subnet, &taken(store, &map, name).await?)
}

fn pick(taken: &[(String, Ipv4Net)]) -> Result<Ipv4Net, OpError> {
    POOL.subnets(POOL_PREFIX)
        .expect("/24 is inside /11")
        .find(|c| taken.iter().all(|(_, s)| !overlap(*c, *s)))
        .ok_or_else(|| {
            OpError::conflict(
                "subnet",
                format!("no free /{POOL_PREFIX} is left in the pool {POOL}; give a subnet"),
            )
        })
}

/// A reservation made or found for a network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserved {
    /// The subnet.
    pub(crate) subnet: Ipv4Net,
    /// Made by this call (so undone if the call fails), not found.
    pub(crate) fresh: bool,
}

/// Reserves `wanted` (or a free subnet from [`POOL`]) for `name`.
///
/// A reservation already under `name` (a create in progress, or one that
/// stopped part way) is taken over if it fits the request, so retrying a
/// failed create completes it; otherwise it is a conflict.
pub(crate) async fn reserve(
    store: &dyn Store,
    name: &str,
    wanted: Option<Ipv4Net>,
) -> Result<Reserved, OpError> {
    loop {
        let (mut map, rev) = read(store).await?;
        if let Some(held) = map.get(name) {
            return match wanted {
                Some(w) if w != *held => Err(OpError::conflict(
                    "subnet",
                    format!(
                        "subnet {held} is reserved for network `{name}` by a create in progress \
                         (create it with that subnet or none to finish it)"
                    ),
                )),
                _ => Ok(Reserved {
                    subnet: *held,
                    fresh: false,
                }),
            };
        }
        let taken = taken(store, &map, name).await?;
        let subnet = match wanted {
            Some(w) => {
                check_overlap(w, &taken)?;
                w
            }
            None => pick(&taken)?,
        };
        map.insert(name.to_string(), subnet);
        if store.put_if(KEY, rev, to_json(&map), 0).await? {
            return Ok(Reserved {
                subnet,
                fresh: true,
            });
        }
        // Another create or remove wrote in between: decide again.
    }
}

/// Every reservation: network name and subnet.
pub(crate) async fn reserved(store: &dyn Store) -> Result<Vec<(String, Ipv4Net)>, OpError> {
    Ok(read(store).await?.0.into_iter().collect())
}

/// Drops `name`'s reservation if it is still `subnet`.
pub(crate) async fn release(store: &dyn Store, name: &str, subnet: Ipv4Net) -> Result<(), OpError> {
    loop {
        let (mut map, rev) = read(store).await?;
        if map.get(name) != Some(&subnet) {
            return Ok(());
        }
        map.remove(name);
        if store.put_if(KEY, rev, to_json(&map), 0).await? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_both_ways_and_pool_picks() {
        assert!(overlap(net("10.77.0.0/16"), net("10.77.3.0/24")));
        assert!(overlap(net("10.77.3.0/24"), net("10.77.0.0/16")));
        assert!(!overlap(net("10.77.0.0/24"), net("10.77.1.0/24")));
        let taken = vec![
            ("a".to_string(), net("10.96.0.0/23")),
            ("b".to_string(), net("10.96.3.0/24")),
        ];
        assert_eq!(pick(&taken).unwrap(), net("10.96.2.0/24"));
        let e = check_overlap(net("10.96.1.0/24"), &taken).unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.96.1.0/24 overlaps network `a` (10.96.0.0/23)"
        );
        let all = vec![("big".to_string(), POOL)];
        assert_eq!(pick(&all).unwrap_err().field(), Some("subnet"));
    }
}
