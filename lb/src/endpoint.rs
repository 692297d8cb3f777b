//! Live per-backend state shared by the pool, the policies, the health
//! checks and the proxy: counters, health, ejection, the slow-start clock and
//! the latency estimate. An [`Endpoint`] outlives backend-set updates: the
//! pool keeps the same one for as long as its address stays configured.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Backend;

/// Latency assumed for a backend before its first sample (peak-EWMA).
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// One backend's live state.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    weight: AtomicU32,
    backup: AtomicBool,
    /// Connections (or requests) now open to this backend.
    active: AtomicI64,
    /// Connections ever established or attempted through the pool.
    total: AtomicU64,
    /// Connect attempts that failed or timed out.
    connect_failures: AtomicU64,
    /// Bytes sent to the backend.
    bytes_to: AtomicU64,
    /// Bytes received from the backend.
    bytes_from: AtomicU64,
    /// Verdict of active health checks (true when checks are off).
    checked_up: AtomicBool,
    /// Ejection by passive health (outlier detection).
    pub(crate) outlier: Mutex<Outlier>,
    /// When the current slow-start ramp began, if one is running.
    slow_start_since: Mutex<Option<Instant>>,
    ewma: Mutex<PeakEwma>,
    /// HTTP responses and latency (HTTP mode).
    pub http: crate::http::stats::BackendHttpStats,
    /// Woken when the last open connection ends ([`Endpoint::wait_idle`]).
    idle: tokio::sync::Notify,
    /// Set once anyone waits on `idle`: until then closing a connection
    /// costs no lock.
    idle_watched: AtomicBool,
}

/// Passive-health bookkeeping of one endpoint.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outlier {
    /// Connect failures since the last success.
    pub consecutive_failures: u32,
    /// How many times it was ejected (grows the ejection time; starts
    /// again after a long enough time in).
    pub times_ejected: u32,
    /// How many times it was ejected in all (for the metrics).
    pub ejections: u64,
    /// Ejected until this instant (kept once past, to date the ejection).
    pub ejected_until: Option<Instant>,
    /// Ejected, and not yet taken back by the pool.
    pub returning: bool,
}

impl Endpoint {
    /// A fresh endpoint for `backend`: healthy, idle, no samples.
    pub fn new(backend: &Backend) -> Self {
        Endpoint {
            addr: backend.addr,
            weight: AtomicU32::new(backend.weight),
            backup: AtomicBool::new(backend.backup),
            active: AtomicI64::new(0),
            total: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            bytes_to: AtomicU64::new(0),
            bytes_from: AtomicU64::new(0),
            checked_up: AtomicBool::new(true),
            outlier: Mutex::new(Outlier::default()),
            slow_start_since: Mutex::new(None),
            ewma: Mutex::new(PeakEwma::new(DEFAULT_RTT)),
            http: Default::default(),
            idle: tokio::sync::Notify::new(),
            idle_watched: AtomicBool::new(false),
        }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured weight (0 = draining).
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Whether this is a backup backend.
    pub fn is_backup(&self) -> bool {
        self.backup.load(Relaxed)
    }

    pub(crate) fn set_spec(&self, backend: &Backend) {
        self.weight.store(backend.weight, Relaxed);
        self.backup.store(backend.backup, Relaxed);
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed).max(0) as u64
    }

    /// Returns once no connection to this backend is open: at once if
    /// none is, else when the last one ends (told by its guard, not
    /// polled). A connection opened meanwhile keeps it waiting.
    pub async fn wait_idle(&self) {
        // SeqCst here and in the guard: either the guard sees the flag, or
        // this sees the guard's decrement.
        self.idle_watched.store(true, SeqCst);
        loop {
            let ended = self.idle.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.active.load(SeqCst) <= 0 {
                return;
            }
            ended.await;
        }
    }

    /// Connections ever handed to this backend.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Failed connect attempts.
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Relaxed)
    }

    /// How many times passive health has ejected the backend.
    pub fn ejections(&self) -> u64 {
        self.outlier().ejections
    }

    /// Bytes sent to and received from the backend.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_to.load(Relaxed), self.bytes_from.load(Relaxed))
    }

    /// Counts bytes moved: `to` the backend and `from` it.
    pub fn add_bytes(&self, to: u64, from: u64) {
        self.bytes_to.fetch_add(to, Relaxed);
        self.bytes_from.fetch_add(from, Relaxed);
    }

    /// The active health checks' verdict.
    pub fn checked_up(&self) -> bool {
        self.checked_up.load(Relaxed)
    }

    /// Records the active checks' verdict; returns true if it changed.
    pub(crate) fn set_checked_up(&self, up: bool) -> bool {
        self.checked_up.swap(up, Relaxed) != up
    }

    pub(crate) fn note_connect_failure(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn outlier(&self) -> MutexGuard<'_, Outlier> {
        lock(&self.outlier)
    }

    /// Whether passive health has ejected this endpoint at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.outlier().ejected_until.is_some_and(|t| t > now)
    }

    /// Whether it may take traffic at `now`: checked up and not ejected.
    pub fn is_available(&self, now: Instant) -> bool {
        self.checked_up() && !self.is_ejected(now)
    }

    /// Starts a slow-start ramp at `now`.
    pub(crate) fn start_slow_start(&self, now: Instant) {
        *lock(&self.slow_start_since) = Some(now);
    }

    /// Weight in thousandths, ramped while slow start runs: from `min_percent`
    /// of the weight up to all of it, linearly over `window`.
    pub fn effective_weight_milli(&self, now: Instant, window: Duration, min_percent: u32) -> u64 {
        let full = u64::from(self.weight()) * 1000;
        if window.is_zero() {
            return full;
        }
        let mut since = lock(&self.slow_start_since);
        let Some(start) = *since else { return full };
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= window {
            *since = None;
            return full;
        }
        let frac = elapsed.as_secs_f64() / window.as_secs_f64();
        let floor = f64::from(min_percent.min(100)) / 100.0;
        ((full as f64) * frac.max(floor)).max(1.0) as u64
    }

    /// Whether a slow-start ramp is running at `now`.
    pub fn in_slow_start(&self, now: Instant, window: Duration) -> bool {
        lock(&self.slow_start_since).is_some_and(|s| now.saturating_duration_since(s) < window)
    }

    /// Records one latency sample (peak-EWMA).
    pub fn observe_rtt(&self, rtt: Duration, now: Instant, decay: Duration) {
        lock(&self.ewma).observe(rtt, now, decay);
    }

    /// The current latency estimate in nanoseconds.
    pub fn rtt_estimate_ns(&self) -> f64 {
        lock(&self.ewma).estimate_ns
    }

    /// Marks one connection open; the guard closes it when dropped.
    pub fn open(self: &Arc<Self>) -> ConnGuard {
        self.active.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        ConnGuard {
            endpoint: Arc::clone(self),
        }
    }
}

/// Holds one unit of an endpoint's `active` count while alive.
#[derive(Debug)]
pub struct ConnGuard {
    endpoint: Arc<Endpoint>,
}

impl ConnGuard {
    /// The endpoint this connection belongs to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let was = self.endpoint.active.fetch_sub(1, SeqCst);
        if was == 1 && self.endpoint.idle_watched.load(SeqCst) {
            self.endpoint.idle.notify_waiters();
        }
    }
}

/// linkerd's peak-EWMA: a slower sample replaces the estimate at once, faster
/// ones pull it down with weight `1 - exp(-elapsed / decay)`.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp: Option<Instant>,
}

impl PeakEwma {
    /// An estimate starting at `initial`.
    pub fn new(initial: Duration) -> Self {
        PeakEwma {
            estimate_ns: initial.as_nanos() as f64,
            stamp: None,
        }
    }

    /// The estimate in nanoseconds.
    pub fn estimate_ns(&self) -> f64 {
        self.estimate_ns
    }

    /// Folds in one sample taken at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant, decay: Duration) {
        let sample = rtt.as_nanos() as f64;
        if sample > self.estimate_ns || self.stamp.is_none() {
            self.estimate_ns = sample;
        } else {
            let elapsed = self
                .stamp
                .map(|s| now.saturating_duration_since(s).as_nanos() as f64)
                .unwrap_or(0.0);
            let tau = decay.as_nanos().max(1) as f64;
            let w = (-elapsed / tau).exp();
            self.estimate_ns = self.estimate_ns * w + sample * (1.0 - w);
        }
        self.stamp = Some(now);
    }
}

/// Locks a mutex, recovering the data if a holder panicked: every value
/// guarded here stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(weight: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(
            &Backend::new("127.0.0.1:1".parse().unwrap()).with_weight(weight),
        ))
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_connection_ends() {
        let e = ep(1);
        e.wait_idle().await; // nothing open: at once
        let (g1, g2) = (e.open(), e.open());
        let waiter = tokio::spawn({
            let e = Arc::clone(&e);
            async move { e.wait_idle().await }
        });
        tokio::task::yield_now().await;
        drop(g1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(g2);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the last guard")
            .unwrap();
    }

    #[test]
    fn guard_counts_active_and_total() {
        let e = ep(1);
        let g1 = e.open();
        let g2 = e.open();
        assert_eq!((e.active(), e.total()), (2, 2));
        drop(g1);
        assert_eq!((e.active(), e.total()), (1, 2));
        drop(g2);
        assert_eq!(e.active(), 0);
    }

    #[test]
    fn peak_ewma_takes_peaks_and_decays_toward_faster_samples() {
        let t0 = Instant::now();
        let decay = Duration::from_secs(10);
        let mut e = PeakEwma::new(Duration::from_millis(1));
        e.observe(Duration::from_millis(5), t0, decay);
        assert_eq!(e.estimate_ns(), 5e6);
        // A slower sample replaces the estimate at once.
        e.observe(
            Duration::from_millis(50),
            t0 + Duration::from_secs(1),
            decay,
        );
        assert_eq!(e.estimate_ns(), 50e6);
        // A faster sample after one decay period moves it 1 - 1/e of the way.
        e.observe(
            Duration::from_millis(10),
            t0 + Duration::from_secs(11),
            decay,
        );
        let expected = 50e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
        assert!(
            (e.estimate_ns() - expected).abs() < 1.0,
            "{}",
            e.estimate_ns()
        );
        // A faster sample right away barely moves it.
        let before = e.estimate_ns();
        e.observe(
            Duration::from_millis(1),
            t0 + Duration::from_secs(11),
            decay,
        );
        assert_eq!(e.estimate_ns(), before);
    }

    #[test]
    fn slow_start_ramps_linearly_from_the_floor() {
        let e = ep(4);
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(e.effective_weight_milli(t0, w, 10), 4000);
        e.start_slow_start(t0);
        assert_eq!(e.effective_weight_milli(t0, w, 10), 400);
        assert_eq!(
            e.effective_weight_milli(t0 + Duration::from_secs(5), w, 10),
            2000
        );
        assert!(e.in_slow_start(t0 + Duration::from_secs(9), w));
        assert_eq!(
            e.effective_weight_milli(t0 + Duration::from_secs(10), w, 10),
            4000
        );
        assert!(!e.in_slow_start(t0 + Duration::from_secs(11), w));
        // Without a window, slow start never applies.
        e.start_slow_start(t0);
        assert_eq!(e.effective_weight_milli(t0, Duration::ZERO, 10), 4000);
    }
}
