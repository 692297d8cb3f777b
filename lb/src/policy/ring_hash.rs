//! `ring-hash`: a consistent hash ring with bounded load.
//!
//! Each candidate owns points on a 64-bit ring in proportion to its weight
//! (160 per unit of weight, fewer when the ring would pass 2^20 points), so
//! adding or removing a candidate moves only the keys it takes or gives up. A key goes to the first point at or after
//! it whose owner is under its capacity: with `m` connections open across
//! the candidates, a candidate of weight `w` (of total `W`) may hold at most
//! `ceil(c × (m + 1) × w / W)` (Mirrokni et al., "Consistent Hashing with
//! Bounded Loads"). So no backend runs over `c ×` its fair share, and a key
//! keeps its backend while that backend is not overloaded. Summing the load
//! makes a pick O(candidates).

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Pick, Policy, PolicyOptions};
use crate::endpoint::Endpoint;
use crate::hash::hash_addr;

const MAX_POINTS: u64 = 1 << 20;
const POINTS_PER_WEIGHT: u64 = 160;

#[derive(Debug, Default)]
struct Ring {
    cands: Vec<Arc<Endpoint>>,
    /// (point, candidate index), sorted by point.
    points: Vec<(u64, u32)>,
    total_weight: u64,
}

/// Consistent hashing with bounded loads.
#[derive(Debug)]
pub struct RingHash {
    opts: PolicyOptions,
    ring: ArcSwap<Ring>,
}

impl RingHash {
    /// An empty policy.
    pub fn new(opts: PolicyOptions) -> Self {
        RingHash {
            opts,
            ring: ArcSwap::from_pointee(Ring::default()),
        }
    }
}

fn build(cands: &[Arc<Endpoint>]) -> Ring {
    let weights: Vec<u64> = cands.iter().map(|e| u64::from(e.weight().max(1))).collect();
    let total_weight: u64 = weights.iter().sum();
    let per_weight = POINTS_PER_WEIGHT.min(MAX_POINTS / total_weight.max(1));
    let mut points = Vec::new();
    for (i, (e, w)) in cands.iter().zip(&weights).enumerate() {
        let n = (per_weight * w).max(1);
        points.extend((0..n).map(|j| (hash_addr(e.addr(), j), i as u32)));
    }
    points.sort_unstable();
    Ring {
        cands: cands.to_vec(),
        points,
        total_weight,
    }
}

impl Policy for RingHash {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        self.ring.store(Arc::new(build(candidates)));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let r = self.ring.load();
        let len = r.points.len();
        if len == 0 {
            return None;
        }
        let m: u64 = r.cands.iter().map(|e| e.active()).sum();
        let c = self.opts.ring_hash_c.max(1.0);
        let start = r.points.partition_point(|p| p.0 < pick.key);
        let mut fallback = None;
        for j in 0..len {
            let i = r.points[(start + j) % len].1 as usize;
            let ep = &r.cands[i];
            if pick.skips(ep) {
                continue;
            }
            fallback.get_or_insert(i);
            let share = ep.weight().max(1) as f64 / r.total_weight as f64;
            let cap = (c * (m + 1) as f64 * share).ceil() as u64;
            if ep.active() < cap {
                return Some(Arc::clone(ep));
            }
        }
        fallback.map(|i| Arc::clone(&r.cands[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::hash::mix;
    use tokio::time::Instant;

    #[test]
    fn a_key_sticks_to_its_backend_while_unloaded() {
        let p = RingHash::new(PolicyOptions::default());
        p.update(&endpoints(&[1, 1, 1, 1]));
        let now = Instant::now();
        for k in 0..200u64 {
            let a = p.pick(&Pick::new(mix(k), now)).unwrap().addr();
            let b = p.pick(&Pick::new(mix(k), now)).unwrap().addr();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn shares_follow_weights_and_removal_moves_few_keys() {
        let eps = endpoints(&[1, 1, 2, 1, 1]);
        let p = RingHash::new(PolicyOptions::default());
        p.update(&eps);
        let c = counts(&p, 5, 30_000);
        // Backend 2 has a third of the weight: expect ~10 000 (ring noise).
        assert!((8_000..=12_000).contains(&c[2]), "{c:?}");
        let now = Instant::now();
        let map = |p: &RingHash| -> Vec<_> {
            (0..20_000u64)
                .map(|k| p.pick(&Pick::new(mix(k), now)).unwrap().addr())
                .collect()
        };
        let before = map(&p);
        p.update(&[&eps[..1], &eps[2..]].concat());
        let after = map(&p);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let on_removed = before.iter().filter(|a| **a == eps[1].addr()).count();
        assert_eq!(moved, on_removed, "only the removed backend's keys move");
    }

    #[test]
    fn no_backend_goes_over_c_times_the_average() {
        let eps = endpoints(&[1, 1, 1, 1]);
        let p = RingHash::new(PolicyOptions::default()); // c = 1.25
        p.update(&eps);
        let now = Instant::now();
        // The worst case for plain consistent hashing: every connection has
        // the same key.
        let mut guards = Vec::new();
        for total in 1..=100u64 {
            guards.push(p.pick(&Pick::new(42, now)).unwrap().open());
            let cap = (1.25 * total as f64 / 4.0).ceil() as u64;
            for e in &eps {
                assert!(e.active() <= cap, "{} > {cap} at {total}", e.active());
            }
        }
        assert_eq!(eps.iter().map(|e| e.active()).max(), Some(32));
    }
}
