//! `weighted`: nginx's smooth weighted round-robin, exactly.
//!
//! Each pick adds every candidate's effective weight to its current weight,
//! takes the candidate with the largest current weight (the first on a tie)
//! and subtracts the total from it. Weights 5, 1, 1 give `a a b a c a a`:
//! spread out, never five in a row (pingora#195). Memory is one integer per
//! candidate. Slow start lowers a candidate's effective weight while it runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::{Pick, Policy, PolicyOptions};
use crate::endpoint::{lock, Endpoint};

/// Smooth weighted round-robin.
#[derive(Debug)]
pub struct Weighted {
    opts: PolicyOptions,
    state: Mutex<Vec<(Arc<Endpoint>, i64)>>,
}

impl Weighted {
    /// An empty policy.
    pub fn new(opts: PolicyOptions) -> Self {
        Weighted {
            opts,
            state: Mutex::new(Vec::new()),
        }
    }
}

impl Policy for Weighted {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        let mut state = lock(&self.state);
        let old: std::collections::HashMap<SocketAddr, i64> =
            state.iter().map(|(e, c)| (e.addr(), *c)).collect();
        *state = candidates
            .iter()
            .map(|e| (Arc::clone(e), old.get(&e.addr()).copied().unwrap_or(0)))
            .collect();
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let mut state = lock(&self.state);
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..state.len() {
            if pick.skips(&state[i].0) {
                continue;
            }
            let w = self.opts.weight_milli(&state[i].0, pick.now) as i64;
            state[i].1 += w;
            total += w;
            if best.is_none_or(|b| state[i].1 > state[b].1) {
                best = Some(i);
            }
        }
        let b = best?;
        state[b].1 -= total;
        Some(Arc::clone(&state[b].0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let p = Weighted::new(PolicyOptions::default());
        p.update(&endpoints(&[5, 1, 1]));
        // a a b a c a a, twice: the cycle repeats exactly.
        let a_b_c = vec![0, 0, 1, 0, 2, 0, 0];
        assert_eq!(sequence(&p, 7), a_b_c);
        assert_eq!(sequence(&p, 7), a_b_c);
    }

    #[test]
    fn shares_are_exact_over_a_cycle() {
        let p = Weighted::new(PolicyOptions::default());
        p.update(&endpoints(&[3, 2, 1, 4]));
        let mut c = [0; 4];
        for i in sequence(&p, 100) {
            c[i] += 1;
        }
        assert_eq!(c, [30, 20, 10, 40]);
    }

    #[test]
    fn state_survives_an_update_and_new_members_join_at_zero() {
        let eps = endpoints(&[5, 1, 1]);
        let p = Weighted::new(PolicyOptions::default());
        p.update(&eps);
        assert_eq!(sequence(&p, 3), vec![0, 0, 1]);
        // Re-publishing the same set changes nothing in the sequence.
        p.update(&eps);
        assert_eq!(sequence(&p, 4), vec![0, 2, 0, 0]);
    }

    #[test]
    fn slow_start_lowers_the_share_of_a_ramping_backend() {
        let opts = PolicyOptions {
            slow_start: Duration::from_secs(10),
            slow_start_min_percent: 10,
            ..Default::default()
        };
        let eps = endpoints(&[1, 1]);
        let now = Instant::now();
        eps[1].start_slow_start(now);
        let p = Weighted::new(opts);
        p.update(&eps);
        let mut c = [0; 2];
        for _ in 0..110 {
            c[idx(&p.pick(&Pick::new(0, now)).unwrap())] += 1;
        }
        // Effective weights 1000 and 100: exactly 100 and 10 of 110.
        assert_eq!(c, [100, 10]);
    }

    #[test]
    fn zero_candidates_or_all_skipped_is_none() {
        let p = Weighted::new(PolicyOptions::default());
        assert!(p.pick(&Pick::new(0, Instant::now())).is_none());
        let eps = endpoints(&[1]);
        p.update(&eps);
        let skip = [eps[0].addr()];
        let pick = Pick {
            skip: &skip,
            ..Pick::new(0, Instant::now())
        };
        assert!(p.pick(&pick).is_none());
    }
}
