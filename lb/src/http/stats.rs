//! HTTP counters: responses by status class, latency histograms, retries
//! and upstream connection reuse. Lock-free; rendered by `crate::metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound (not cumulative; summed on render).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Cumulative counts per bound, then the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let cum = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                acc += c.load(Relaxed);
                (*b, acc)
            })
            .collect();
        (
            cum,
            self.count.load(Relaxed),
            self.sum_micros.load(Relaxed) as f64 / 1e6,
        )
    }
}

/// Responses counted by status class (1xx to 5xx).
#[derive(Debug, Default)]
pub struct StatusCounts([AtomicU64; 5]);

impl StatusCounts {
    /// Counts one response with `status`.
    pub fn count(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.0.get(i as usize))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// (class label, count) for each class.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let l = |i: usize| self.0[i].load(Relaxed);
        [
            ("1xx", l(0)),
            ("2xx", l(1)),
            ("3xx", l(2)),
            ("4xx", l(3)),
            ("5xx", l(4)),
        ]
    }
}

/// Per-backend HTTP counters (on the endpoint, so they survive updates).
#[derive(Debug, Default)]
pub struct BackendHttpStats {
    /// Responses from this backend by class.
    pub responses: StatusCounts,
    /// Time from pick to the response header.
    pub latency: Histogram,
}

/// Per-listener HTTP counters.
#[derive(Debug, Default)]
pub struct ListenerHttpStats {
    /// Responses sent to clients by class (errors made by the proxy too).
    pub responses: StatusCounts,
    /// Whole-request latency as the client saw it.
    pub latency: Histogram,
    /// Requests retried on another backend.
    pub retries: AtomicU64,
    /// Retries refused by the budget.
    pub retries_denied: AtomicU64,
    /// Upstream requests sent on a reused (pooled) connection.
    pub upstream_reused: AtomicU64,
    /// Upstream requests that needed a new connection.
    pub upstream_new: AtomicU64,
    /// Client connections the fast path handed to pingora.
    pub handoffs: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (cum, count, sum) = h.snapshot();
        assert_eq!(cum[0], (0.0005, 1));
        assert_eq!(cum[3], (0.005, 2));
        assert_eq!(cum.last().unwrap().1, 2, "60 s is above every bound");
        assert_eq!(count, 3);
        assert!((sum - 60.0033).abs() < 1e-6);
    }

    #[test]
    fn status_classes() {
        let s = StatusCounts::default();
        for code in [101, 200, 204, 302, 404, 503, 99, 600] {
            s.count(code);
        }
        assert_eq!(s.snapshot().map(|(_, n)| n), [1, 2, 1, 1, 1]);
    }
}
