//! `round-robin`: each candidate in turn; weights are ignored.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::{empty_snapshot, Pick, Policy, Snapshot};
use crate::endpoint::Endpoint;

/// Round-robin over the candidates. The cursor survives updates.
#[derive(Debug)]
pub struct RoundRobin {
    cands: Snapshot,
    cursor: AtomicUsize,
}

impl Default for RoundRobin {
    fn default() -> Self {
        RoundRobin {
            cands: empty_snapshot(),
            cursor: AtomicUsize::new(0),
        }
    }
}

impl Policy for RoundRobin {
    fn update(&self, candidates: &[Arc<Endpoint>]) {
        self.cands.store(Arc::new(candidates.to_vec()));
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        let cands = self.cands.load();
        let n = cands.len();
        for _ in 0..n {
            let ep = &cands[self.cursor.fetch_add(1, Relaxed) % n];
            if !pick.skips(ep) {
                return Some(Arc::clone(ep));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn cycles_in_order_ignoring_weights() {
        let p = RoundRobin::default();
        p.update(&endpoints(&[5, 1, 1]));
        assert_eq!(sequence(&p, 7), vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn skips_tried_backends_and_ends_when_none_left() {
        let eps = endpoints(&[1, 1, 1]);
        let p = RoundRobin::default();
        p.update(&eps);
        let skip = [eps[0].addr(), eps[1].addr()];
        let pick = Pick {
            skip: &skip,
            ..Pick::new(0, Instant::now())
        };
        for _ in 0..3 {
            assert_eq!(idx(&p.pick(&pick).unwrap()), 2);
        }
        let all = [eps[0].addr(), eps[1].addr(), eps[2].addr()];
        assert!(p.pick(&Pick { skip: &all, ..pick }).is_none());
        p.update(&[]);
        assert!(p.pick(&Pick::new(0, Instant::now())).is_none());
    }
}
