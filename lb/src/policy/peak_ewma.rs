//! `peak-ewma`: power of two choices on `rtt_estimate × (active + 1)`,
//! divided by weight (linkerd's balancer).
//!
//! The latency estimate is the endpoint's peak-EWMA (see
//! [`crate::endpoint::PeakEwma`]): in TCP mode the samples are connect
//! times, in HTTP mode response times. The lower cost wins; a tie goes to
//! either at random.

use std::sync::Arc;

use rand::Rng;

use super::{empty_snapshot, two_choices, Pick, Policy, PolicyOptions, Snapshot};
use crate::endpoint::Endpoint;

/// P2C on peak-EWMA latency times load.
#[derive(Debug)]
pub struct PeakEwmaP2c {
    opts: PolicyOptions,
    cands: Snapshot,
}

impl PeakEwmaP2c {
    /// An empty policy.
    pub fn new(opts: PolicyOptions) -> Self {
        PeakEwmaP2c {
            opts,
            cands: empty_snapshot(),
        }
    }

    /// linkerd's cost: lower is better.
    pub fn cost(&self, ep: &Endpoint, pick: &Pick<'_>) -> f64 {
        let w = self.opts.weight_milli(ep, pick.now).max(1) as f64 / 1000.0;
        ep.rtt_estimate_ns() * (ep.active() + 1) as f64 / w
    }
}

impl Policy for PeakEwmaP2c {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        self.cands.store(Arc::new(candidates.to_vec()));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let cands = self.cands.load();
        let (a, b) = two_choices(&cands, pick)?;
        let Some(b) = b else {
            return Some(Arc::clone(&cands[a]));
        };
        let (ca, cb) = (self.cost(&cands[a], pick), self.cost(&cands[b], pick));
        let winner = if ca < cb {
            a
        } else if cb < ca {
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
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn the_faster_backend_wins_until_its_load_outweighs_the_gap() {
        let eps = endpoints(&[1, 1]);
        let now = Instant::now();
        let decay = Duration::from_secs(10);
        eps[0].observe_rtt(Duration::from_millis(1), now, decay);
        eps[1].observe_rtt(Duration::from_millis(4), now, decay);
        let p = PeakEwmaP2c::new(PolicyOptions::default());
        p.update(&eps);
        let pick = Pick::new(0, now);
        assert_eq!(idx(&p.pick(&pick).unwrap()), 0);
        // 1 ms × (4 + 1) = 5 > 4 ms × 1: the slow one now costs less.
        let _g: Vec<_> = (0..4).map(|_| eps[0].open()).collect();
        assert_eq!(p.cost(&eps[0], &pick), 5e6);
        assert_eq!(idx(&p.pick(&pick).unwrap()), 1);
    }

    #[test]
    fn a_latency_spike_moves_traffic_at_once() {
        let eps = endpoints(&[1, 1]);
        let now = Instant::now();
        let decay = Duration::from_secs(10);
        eps[0].observe_rtt(Duration::from_millis(1), now, decay);
        eps[1].observe_rtt(Duration::from_millis(2), now, decay);
        let p = PeakEwmaP2c::new(PolicyOptions::default());
        p.update(&eps);
        eps[0].observe_rtt(Duration::from_millis(30), now, decay);
        assert_eq!(idx(&p.pick(&Pick::new(0, now)).unwrap()), 1);
    }

    #[test]
    fn weight_divides_cost() {
        let eps = endpoints(&[4, 1]);
        let now = Instant::now();
        let decay = Duration::from_secs(10);
        eps[0].observe_rtt(Duration::from_millis(2), now, decay);
        eps[1].observe_rtt(Duration::from_millis(1), now, decay);
        let p = PeakEwmaP2c::new(PolicyOptions::default());
        p.update(&eps);
        // 2 ms / 4 beats 1 ms / 1.
        assert_eq!(idx(&p.pick(&Pick::new(0, now)).unwrap()), 0);
    }
}
