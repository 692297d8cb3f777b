//! `random`: a candidate drawn at random in proportion to its weight.
//!
//! Cumulative weights are built once per update; a pick is one random draw
//! and a binary search, O(log candidates).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::Rng;

use super::{Pick, Policy};
use crate::endpoint::Endpoint;

#[derive(Debug, Default)]
struct Table {
    cands: Vec<Arc<Endpoint>>,
    /// `cumulative[i]` = sum of the weights of candidates 0..=i.
    cumulative: Vec<u64>,
}

/// Weighted random choice.
#[derive(Debug, Default)]
pub struct Random {
    table: ArcSwap<Table>,
}

impl Policy for Random {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        let mut sum = 0u64;
        let cumulative = candidates
            .iter()
            .map(|e| {
                sum += u64::from(e.weight().max(1));
                sum
            })
            .collect();
        self.table.store(Arc::new(Table {
            cands: candidates.to_vec(),
            cumulative,
        }));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let t = self.table.load();
        let total = *t.cumulative.last()?;
        let mut rng = rand::thread_rng();
        // A few draws, then a scan for what is left: skips are rare and few.
        for _ in 0..4 {
            let r = rng.gen_range(0..total);
            let i = t.cumulative.partition_point(|&c| c <= r);
            if !pick.skips(&t.cands[i]) {
                return Some(Arc::clone(&t.cands[i]));
            }
        }
        let open: Vec<_> = t.cands.iter().filter(|e| !pick.skips(e)).collect();
        if open.is_empty() {
            return None;
        }
        Some(Arc::clone(open[rng.gen_range(0..open.len())]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn shares_follow_weights() {
        let p = Random::default();
        p.update(&endpoints(&[1, 3]));
        let c = counts(&p, 2, 40_000);
        // Expected 10 000 / 30 000; 6 standard deviations is about ±520.
        assert!((9_480..=10_520).contains(&c[0]), "{c:?}");
        assert_eq!(c[0] + c[1], 40_000);
    }

    #[test]
    fn never_picks_a_skipped_backend() {
        let eps = endpoints(&[1, 100, 1]);
        let p = Random::default();
        p.update(&eps);
        let skip = [eps[1].addr()];
        let pick = Pick {
            skip: &skip,
            ..Pick::new(0, Instant::now())
        };
        for _ in 0..1000 {
            assert_ne!(idx(&p.pick(&pick).unwrap()), 1);
        }
    }
}
