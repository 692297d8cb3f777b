//! The arrival schedule: every request's intended send time, fixed before
//! the run starts.
//!
//! The schedule depends only on the [`Load`], the run length and the seed,
//! so two runs with one seed offer exactly the same requests.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::dist::exp1;
use crate::scenario::{Arrivals, Load};

/// Requests per second wanted at `t` (base rate, steps and bursts).
pub fn rate_at(load: &Load, t: Duration) -> f64 {
    let mut rate = load.rate;
    let mut steps: Vec<_> = load.steps.iter().collect();
    steps.sort_by_key(|s| s.at);
    for s in steps {
        if s.at.0 <= t {
            rate = s.rate;
        }
    }
    for b in &load.bursts {
        if b.at.0 <= t && t < b.at.0 + b.length.0 {
            rate += b.rate;
        }
    }
    rate
}

/// Intended send times from the start of the run, ascending, all below
/// `duration`.
///
/// Arrivals follow a process whose rate changes with [`rate_at`]: gaps are
/// drawn in "unit time" (mean 1 for Poisson, exactly 1 for uniform) and
/// mapped through the integrated rate, so a step takes effect at its time.
pub fn schedule(load: &Load, duration: Duration, seed: u64) -> Vec<Duration> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let dt: f64 = 1e-3; // integrate the rate per millisecond
    let end = duration.as_secs_f64();
    let mut out = Vec::new();
    let mut t = 0.0f64;
    // Work left (in expected arrivals) until the next one.
    let mut need = gap(load.arrivals, &mut rng);
    while t < end {
        let r = rate_at(load, Duration::from_secs_f64(t));
        let slice = dt.min(end - t);
        let work = r * slice;
        if work >= need && r > 0.0 {
            t += need / r;
            out.push(Duration::from_secs_f64(t));
            need = gap(load.arrivals, &mut rng);
        } else {
            need -= work;
            t += slice;
        }
    }
    out.retain(|t| *t < duration);
    out
}

fn gap(arrivals: Arrivals, rng: &mut SmallRng) -> f64 {
    match arrivals {
        Arrivals::Poisson => exp1(rng),
        Arrivals::Uniform => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Burst, Dur, Step};

    fn load(rate: f64, arrivals: Arrivals) -> Load {
        Load {
            rate,
            steps: vec![],
            bursts: vec![],
            arrivals,
            connection: Default::default(),
            timeout: Dur(Duration::from_secs(1)),
        }
    }

    #[test]
    fn uniform_is_evenly_spaced() {
        let s = schedule(&load(100.0, Arrivals::Uniform), Duration::from_secs(2), 1);
        assert!((199..=200).contains(&s.len()), "{}", s.len());
        for w in s.windows(2) {
            let gap = (w[1] - w[0]).as_secs_f64();
            assert!((gap - 0.01).abs() < 1e-6, "{gap}");
        }
    }

    #[test]
    fn poisson_holds_the_rate_and_the_seed_repeats_it() {
        let l = load(500.0, Arrivals::Poisson);
        let a = schedule(&l, Duration::from_secs(10), 3);
        assert!((4800..=5200).contains(&a.len()), "{}", a.len());
        assert_eq!(a, schedule(&l, Duration::from_secs(10), 3));
        assert_ne!(a, schedule(&l, Duration::from_secs(10), 4));
    }

    #[test]
    fn steps_and_bursts_change_the_rate_at_their_time() {
        let mut l = load(100.0, Arrivals::Uniform);
        l.steps.push(Step {
            at: Dur(Duration::from_secs(1)),
            rate: 300.0,
        });
        l.bursts.push(Burst {
            at: Dur(Duration::from_millis(2500)),
            length: Dur(Duration::from_millis(500)),
            rate: 700.0,
        });
        let s = schedule(&l, Duration::from_secs(3), 1);
        let count = |a: f64, b: f64| {
            s.iter()
                .filter(|t| (a..b).contains(&t.as_secs_f64()))
                .count()
        };
        assert!((99..=101).contains(&count(0.0, 1.0)));
        assert!((299..=301).contains(&count(1.0, 2.0)));
        assert!(
            (499..=501).contains(&count(2.5, 3.0)),
            "{}",
            count(2.5, 3.0)
        );
    }
}
