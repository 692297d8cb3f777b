//! `maglev`: Google's Maglev consistent hashing.
//!
//! A lookup table of [`MAGLEV_TABLE_SIZE`] (a prime) slots is filled from
//! each candidate's permutation (offset and skip from two stable hashes of
//! its address), weighted as Envoy does: a candidate takes a turn in a round
//! only while its share is behind its weight. A key picks slot
//! `key mod size`; a skipped candidate's slot falls through to the next
//! slots. Removing or adding one of N candidates moves about 1/N of keys.
//! At most `MAGLEV_TABLE_SIZE` candidates take part.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Pick, Policy};
use crate::endpoint::Endpoint;
use crate::hash::hash_addr;

/// Slots in the lookup table (prime, as Maglev requires).
pub const MAGLEV_TABLE_SIZE: usize = 65_537;

#[derive(Debug, Default)]
struct Table {
    cands: Vec<Arc<Endpoint>>,
    /// Candidate index per slot; empty when there are no candidates.
    slots: Vec<u32>,
}

/// Maglev hashing on the pick key.
#[derive(Debug, Default)]
pub struct Maglev {
    table: ArcSwap<Table>,
}

fn build(cands: &[Arc<Endpoint>], size: usize) -> Vec<u32> {
    let cands = &cands[..cands.len().min(size)];
    if cands.is_empty() {
        return Vec::new();
    }
    let m = size as u64;
    let max_w = cands
        .iter()
        .map(|e| u64::from(e.weight().max(1)))
        .max()
        .unwrap_or(1);
    struct Entry {
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        target: u64,
    }
    let mut entries: Vec<Entry> = cands
        .iter()
        .map(|e| Entry {
            offset: hash_addr(e.addr(), 0x6d61_676c) % m,
            skip: hash_addr(e.addr(), 0x736b_6970) % (m - 1) + 1,
            next: 0,
            weight: u64::from(e.weight().max(1)),
            target: 0,
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut slots = vec![EMPTY; size];
    let mut filled = 0usize;
    let mut round: u64 = 1;
    while filled < size {
        for (i, e) in entries.iter_mut().enumerate() {
            if filled == size {
                break;
            }
            if round * e.weight < e.target {
                continue;
            }
            e.target += max_w;
            let mut c = ((e.offset + e.next * e.skip) % m) as usize;
            while slots[c] != EMPTY {
                e.next += 1;
                c = ((e.offset + e.next * e.skip) % m) as usize;
            }
            slots[c] = i as u32;
            e.next += 1;
            filled += 1;
        }
        round += 1;
    }
    slots
}

impl Policy for Maglev {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        let slots = build(candidates, MAGLEV_TABLE_SIZE);
        self.table.store(Arc::new(Table {
            cands: candidates.to_vec(),
            slots,
        }));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let t = self.table.load();
        let m = t.slots.len();
        if m == 0 {
            return None;
        }
        let start = (pick.key % m as u64) as usize;
        (0..m)
            .map(|j| &t.cands[t.slots[(start + j) % m] as usize])
            .find(|ep| !pick.skips(ep))
            .map(Arc::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::hash::mix;
    use tokio::time::Instant;

    fn mapping(p: &Maglev, keys: usize) -> Vec<std::net::SocketAddr> {
        let now = Instant::now();
        (0..keys)
            .map(|k| p.pick(&Pick::new(mix(k as u64), now)).unwrap().addr())
            .collect()
    }

    #[test]
    fn table_is_full_and_balanced_by_weight() {
        let eps = endpoints(&[1, 1, 2]);
        let slots = build(&eps, MAGLEV_TABLE_SIZE);
        let mut c = [0usize; 3];
        for s in &slots {
            c[*s as usize] += 1;
        }
        assert_eq!(c.iter().sum::<usize>(), MAGLEV_TABLE_SIZE);
        // Weights 1:1:2 of 65537 slots: 16384.25, 16384.25, 32768.5.
        for (got, want) in c.iter().zip([16384.25, 16384.25, 32768.5]) {
            assert!((*got as f64 - want).abs() <= 2.0, "{c:?}");
        }
    }

    #[test]
    fn same_key_same_backend() {
        let p = Maglev::default();
        p.update(&endpoints(&[1, 1, 1, 1]));
        assert_eq!(mapping(&p, 1000), mapping(&p, 1000));
    }

    #[test]
    fn removing_or_adding_one_of_n_moves_about_one_nth_of_keys() {
        let n = 10;
        let eps = endpoints(&vec![1; n]);
        let p = Maglev::default();
        p.update(&eps);
        let before = mapping(&p, 20_000);
        // Remove the last backend.
        p.update(&eps[..n - 1]);
        let after = mapping(&p, 20_000);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let removed = eps[n - 1].addr();
        let on_removed = before.iter().filter(|a| **a == removed).count();
        // Every key of the removed backend moves; few others do.
        assert!(after.iter().all(|a| *a != removed));
        assert!(moved >= on_removed);
        let share = moved as f64 / 20_000.0;
        assert!(share < 1.5 / n as f64, "moved {share}");
        // Add it back: the original mapping returns exactly.
        p.update(&eps);
        assert_eq!(mapping(&p, 20_000), before);
    }

    #[test]
    fn a_skipped_backend_loses_only_its_own_keys() {
        let eps = endpoints(&[1, 1, 1]);
        let p = Maglev::default();
        p.update(&eps);
        let now = Instant::now();
        let skip = [eps[0].addr()];
        for k in 0..2000u64 {
            let key = mix(k);
            let first = p.pick(&Pick::new(key, now)).unwrap().addr();
            let second = p
                .pick(&Pick {
                    skip: &skip,
                    ..Pick::new(key, now)
                })
                .unwrap()
                .addr();
            assert_ne!(second, eps[0].addr());
            if first != eps[0].addr() {
                assert_eq!(first, second);
            }
        }
    }

    #[test]
    fn empty_set_picks_nothing() {
        let p = Maglev::default();
        p.update(&[]);
        assert!(p.pick(&Pick::new(1, Instant::now())).is_none());
    }
}
