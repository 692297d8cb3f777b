//! `least-conn`: fewest active connections relative to weight.
//!
//! The score of a candidate is `(active + 1) / weight` (HAProxy's and Envoy's
//! form: with no load the heavier backend wins, and a weight-2 backend
//! carries twice the connections of a weight-1 one). The scan starts at a
//! rotating offset, so ties go round-robin instead of always to the first
//! candidate. Slow start lowers the weight while it runs. O(candidates).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::{empty_snapshot, Pick, Policy, PolicyOptions, Snapshot};
use crate::endpoint::Endpoint;

/// Weighted least-connections.
#[derive(Debug)]
pub struct LeastConn {
    opts: PolicyOptions,
    cands: Snapshot,
    offset: AtomicUsize,
}

impl LeastConn {
    /// An empty policy.
    pub fn new(opts: PolicyOptions) -> Self {
        LeastConn {
            opts,
            cands: empty_snapshot(),
            offset: AtomicUsize::new(0),
        }
    }
}

impl Policy for LeastConn {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        self.cands.store(Arc::new(candidates.to_vec()));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let cands = self.cands.load();
        let n = cands.len();
        if n == 0 {
            return None;
        }
        let start = self.offset.fetch_add(1, Relaxed) % n;
        // Best so far as (index, load = active + 1, weight).
        let mut best: Option<(usize, u128, u128)> = None;
        for j in 0..n {
            let i = (start + j) % n;
            let ep = &cands[i];
            if pick.skips(ep) {
                continue;
            }
            let load = u128::from(ep.active()) + 1;
            let w = u128::from(self.opts.weight_milli(ep, pick.now).max(1));
            // load / w < best_load / best_w, without division.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                best = Some((i, load, w));
            }
        }
        best.map(|(i, _, _)| Arc::clone(&cands[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn picks_the_least_loaded_relative_to_weight() {
        let eps = endpoints(&[1, 2, 1]);
        let p = LeastConn::new(PolicyOptions::default());
        p.update(&eps);
        let _g0 = eps[0].open();
        let _g1 = [eps[1].open(), eps[1].open()];
        let _g2 = [eps[2].open(), eps[2].open()];
        // Scores: 2/1, 3/2, 3/1: backend 1 wins from any start.
        for _ in 0..3 {
            assert_eq!(idx(&p.pick(&Pick::new(0, Instant::now())).unwrap()), 1);
        }
    }

    #[test]
    fn ties_rotate_instead_of_favouring_the_first() {
        let p = LeastConn::new(PolicyOptions::default());
        p.update(&endpoints(&[1, 1, 1]));
        assert_eq!(sequence(&p, 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn held_connections_fill_backends_in_proportion_to_weight() {
        let eps = endpoints(&[1, 3]);
        let p = LeastConn::new(PolicyOptions::default());
        p.update(&eps);
        let now = Instant::now();
        let guards: Vec<_> = (0..40)
            .map(|_| p.pick(&Pick::new(0, now)).unwrap().open())
            .collect();
        assert_eq!((eps[0].active(), eps[1].active()), (10, 30));
        drop(guards);
    }
}
