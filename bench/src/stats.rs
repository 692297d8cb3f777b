//! From samples to numbers: percentiles, throughput, errors, shares per
//! backend, imbalance, and the same per time window.

use std::time::Duration;

use serde::Serialize;

use crate::sample::{Outcome, Sample};

/// The numbers of one target (one policy in one mode), all rounds merged.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Target label, e.g. `tcp/least-conn`.
    pub target: String,
    /// Requests sent.
    pub requests: usize,
    /// Latency percentiles of every request (errors included), in ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
    /// `200` answers per second of run time.
    pub throughput: f64,
    /// Requests that did not end in `200`.
    pub errors: usize,
    /// Fraction of answered requests per backend (sums to 1 when any was).
    pub shares: Vec<f64>,
    /// Coefficient of variation of answered requests per unit of weight
    /// across backends: 0 is a perfect split by weight.
    pub imbalance_cv: f64,
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorted latencies in ms.
pub fn latencies_ms(samples: &[Sample]) -> Vec<f64> {
    let mut v: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Fraction of answered requests per backend (all 0 when none answered).
pub fn shares<'a>(samples: impl IntoIterator<Item = &'a Sample>, backends: usize) -> Vec<f64> {
    let mut counts = vec![0u64; backends];
    for s in samples {
        if let Some(b) = s.backend {
            if let Some(c) = counts.get_mut(b as usize) {
                *c += 1;
            }
        }
    }
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// Coefficient of variation of `shares[i] / weights[i]`.
pub fn imbalance(shares: &[f64], weights: &[u32]) -> f64 {
    let per: Vec<f64> = shares
        .iter()
        .zip(weights)
        .filter(|(_, &w)| w > 0)
        .map(|(s, &w)| s / w as f64)
        .collect();
    if per.is_empty() {
        return 0.0;
    }
    let mean = per.iter().sum::<f64>() / per.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = per.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / per.len() as f64;
    var.sqrt() / mean
}

/// Milliseconds rounded to the microsecond (what `samples.csv` keeps).
fn us(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

/// Summarises `samples` of total run time `elapsed` (all rounds).
pub fn summarize(target: &str, samples: &[Sample], weights: &[u32], elapsed: Duration) -> Summary {
    let lat = latencies_ms(samples);
    let shares = shares(samples, weights.len());
    let ok = samples.iter().filter(|s| s.outcome == Outcome::Ok).count();
    Summary {
        target: target.to_string(),
        requests: samples.len(),
        p50_ms: us(quantile(&lat, 0.50)),
        p90_ms: us(quantile(&lat, 0.90)),
        p99_ms: us(quantile(&lat, 0.99)),
        p999_ms: us(quantile(&lat, 0.999)),
        max_ms: us(lat.last().copied().unwrap_or(0.0)),
        throughput: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        errors: samples.len() - ok,
        imbalance_cv: imbalance(&shares, weights),
        shares,
    }
}

/// One time window of a run.
#[derive(Debug, Clone)]
pub struct Window {
    /// Start of the window (by intended send time).
    pub start: Duration,
    /// 99th percentile latency in the window, ms (0 when empty).
    pub p99_ms: f64,
    /// Share per backend in the window.
    pub shares: Vec<f64>,
}

/// Splits samples into windows of `width` by intended send time.
pub fn windows(samples: &[Sample], backends: usize, width: Duration, run: Duration) -> Vec<Window> {
    let n = (run.as_secs_f64() / width.as_secs_f64()).ceil() as usize;
    let mut buckets: Vec<Vec<&Sample>> = vec![Vec::new(); n];
    for s in samples {
        let i = (s.intended.as_secs_f64() / width.as_secs_f64()) as usize;
        if let Some(b) = buckets.get_mut(i) {
            b.push(s);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let mut lat: Vec<f64> = b.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect();
            lat.sort_by(f64::total_cmp);
            Window {
                start: width * i as u32,
                p99_ms: quantile(&lat, 0.99),
                shares: shares(b.iter().copied(), backends),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, backend: Option<u16>, outcome: Outcome) -> Sample {
        Sample {
            intended: Duration::from_millis(ms * 10),
            latency: Duration::from_millis(ms),
            backend,
            outcome,
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 500.0);
        assert_eq!(quantile(&v, 0.99), 990.0);
        assert_eq!(quantile(&v, 0.999), 999.0);
        assert_eq!(quantile(&v, 1.0), 1000.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn shares_add_up_and_imbalance_follows_weights() {
        let samples: Vec<Sample> = (0..300)
            .map(|i| s(i, Some((i % 3) as u16), Outcome::Ok))
            .chain([s(1, None, Outcome::Failed)])
            .collect();
        let sum = summarize("x", &samples, &[1, 1, 1], Duration::from_secs(3));
        assert!((sum.shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(sum.imbalance_cv < 1e-12);
        assert_eq!(sum.errors, 1);
        assert!((sum.throughput - 100.0).abs() < 1e-9);
        // Equal split over weights 2:1:1 is imbalanced; 2:1:1 split is not.
        assert!(imbalance(&[1.0 / 3.0; 3], &[2, 1, 1]) > 0.2);
        assert!(imbalance(&[0.5, 0.25, 0.25], &[2, 1, 1]) < 1e-12);
        for w in windows(
            &samples,
            3,
            Duration::from_millis(500),
            Duration::from_secs(3),
        ) {
            let total: f64 = w.shares.iter().sum();
            assert!((total - 1.0).abs() < 1e-12, "{total}");
        }
    }
}
