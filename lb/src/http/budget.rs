//! A retry budget: retries are allowed while they stay under a share of the
//! requests of the last second, with a floor per second, so that retries
//! cannot multiply an overload (Finagle's and linkerd's idea).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::endpoint::lock;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    start: Instant,
    requests: u64,
    retries: u64,
    /// The previous window's counts, weighted by how much of it overlaps.
    prev_requests: u64,
    prev_retries: u64,
}

/// Retries allowed: `max(min_per_sec, percent% of requests)` per second.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    min_per_sec: u32,
    window: Mutex<Window>,
}

impl RetryBudget {
    /// A budget of `percent`% of requests, at least `min_per_sec` per second.
    pub fn new(percent: u32, min_per_sec: u32) -> Self {
        RetryBudget {
            percent,
            min_per_sec,
            window: Mutex::new(Window {
                start: Instant::now(),
                requests: 0,
                retries: 0,
                prev_requests: 0,
                prev_retries: 0,
            }),
        }
    }

    fn roll(w: &mut Window, now: Instant) {
        let age = now.saturating_duration_since(w.start);
        if age >= WINDOW * 2 {
            *w = Window {
                start: now,
                requests: 0,
                retries: 0,
                prev_requests: 0,
                prev_retries: 0,
            };
        } else if age >= WINDOW {
            w.prev_requests = w.requests;
            w.prev_retries = w.retries;
            w.requests = 0;
            w.retries = 0;
            w.start += WINDOW;
        }
    }

    /// Counts one request.
    pub fn on_request(&self, now: Instant) {
        let mut w = lock(&self.window);
        Self::roll(&mut w, now);
        w.requests += 1;
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut w = lock(&self.window);
        Self::roll(&mut w, now);
        // Sliding estimate over the last second.
        let into = now.saturating_duration_since(w.start).as_secs_f64() / WINDOW.as_secs_f64();
        let carry = 1.0 - into.min(1.0);
        let requests = w.requests as f64 + w.prev_requests as f64 * carry;
        let retries = w.retries as f64 + w.prev_retries as f64 * carry;
        let allowed = (requests * f64::from(self.percent) / 100.0).max(f64::from(self.min_per_sec));
        if retries + 1.0 <= allowed {
            w.retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_a_few_retries_without_traffic() {
        let b = RetryBudget::new(20, 3);
        let now = Instant::now();
        assert!(b.try_retry(now) && b.try_retry(now) && b.try_retry(now));
        assert!(!b.try_retry(now));
        // A second later the floor is back.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.try_retry(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_under_the_share_of_requests() {
        let b = RetryBudget::new(20, 0);
        let now = Instant::now();
        for _ in 0..100 {
            b.on_request(now);
        }
        let granted = (0..100).filter(|_| b.try_retry(now)).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_previous_second_counts_fading() {
        let b = RetryBudget::new(10, 0);
        for _ in 0..100 {
            b.on_request(Instant::now());
        }
        tokio::time::advance(Duration::from_millis(1500)).await;
        // Half of the old window overlaps the last second: ~50 requests, 5 retries.
        let granted = (0..100).filter(|_| b.try_retry(Instant::now())).count();
        assert_eq!(granted, 5);
    }
}
