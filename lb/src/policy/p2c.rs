//! `p2c`: the power of two random choices on active connections.
//!
//! Two distinct candidates are drawn uniformly and the one with the higher
//! score `weight / (active + 1)^bias` wins (Envoy's least-request form for
//! unequal weights; with equal weights it is simply the less loaded one).
//! A tie goes to either at random. Slow start lowers the weight while it runs.

use std::sync::Arc;

use rand::Rng;

use super::{empty_snapshot, two_choices, Pick, Policy, PolicyOptions, Snapshot};
use crate::endpoint::Endpoint;

/// Power of two choices, least active requests.
#[derive(Debug)]
pub struct P2c {
    opts: PolicyOptions,
    cands: Snapshot,
}

impl P2c {
    /// An empty policy.
    pub fn new(opts: PolicyOptions) -> Self {
        P2c {
            opts,
            cands: empty_snapshot(),
        }
    }

    /// Envoy's score: higher is better.
    pub fn score(&self, ep: &Endpoint, pick: &Pick<'_>) -> f64 {
        let w = self.opts.weight_milli(ep, pick.now) as f64;
        w / ((ep.active() + 1) as f64).powf(self.opts.p2c_bias)
    }
}

impl Policy for P2c {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        self.cands.store(Arc::new(candidates.to_vec()));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let cands = self.cands.load();
        let (a, b) = two_choices(&cands, pick)?;
        let Some(b) = b else {
            return Some(Arc::clone(&cands[a]));
        };
        let (sa, sb) = (self.score(&cands[a], pick), self.score(&cands[b], pick));
        let winner = if sa > sb {
            a
        } else if sb > sa {
            b
        } else if rand::thread_rng().gen_bool(0.5) {
            a
        } else {
            b
        };
        Some(Arc::clone(&cands[winner]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn of_two_backends_the_less_loaded_always_wins() {
        let eps = endpoints(&[1, 1]);
        let p = P2c::new(PolicyOptions::default());
        p.update(&eps);
        let _g = eps[0].open();
        for _ in 0..100 {
            assert_eq!(idx(&p.pick(&Pick::new(0, Instant::now())).unwrap()), 1);
        }
    }

    #[test]
    fn envoy_score_weighs_weight_against_load() {
        let eps = endpoints(&[4, 1]);
        let p = P2c::new(PolicyOptions::default());
        p.update(&eps);
        let pick = Pick::new(0, Instant::now());
        // Weight 4 with 2 active: 4000/3 beats weight 1 idle: 1000/1.
        let _g = [eps[0].open(), eps[0].open()];
        assert_eq!(p.score(&eps[0], &pick), 4000.0 / 3.0);
        assert_eq!(idx(&p.pick(&pick).unwrap()), 0);
        // With 4 active, 4000/5 loses to 1000/1.
        let _h = [eps[0].open(), eps[0].open()];
        assert_eq!(idx(&p.pick(&pick).unwrap()), 1);
    }

    #[test]
    fn bias_zero_ignores_load() {
        let eps = endpoints(&[2, 1]);
        let p = P2c::new(PolicyOptions {
            p2c_bias: 0.0,
            ..Default::default()
        });
        p.update(&eps);
        let _g: Vec<_> = (0..50).map(|_| eps[0].open()).collect();
        assert_eq!(idx(&p.pick(&Pick::new(0, Instant::now())).unwrap()), 0);
    }

    #[test]
    fn equal_load_spreads_over_all_backends() {
        let p = P2c::new(PolicyOptions::default());
        p.update(&endpoints(&[1, 1, 1, 1]));
        let c = counts(&p, 4, 4000);
        assert!(c.iter().all(|&x| x > 800), "{c:?}");
    }
}
