//! A pool: one service's backends, their live state, the policy that picks
//! among them, and the health machinery that decides which may be picked.
//!
//! The pool owns the rules that turn health into *candidates*:
//! - a primary is a candidate while its active checks pass, it is not
//!   ejected and its weight is above 0 (weight 0 drains: open connections
//!   finish, no new ones come);
//! - backups are candidates only while no primary is;
//! - below the panic threshold (a share of healthy primaries) every primary
//!   with a weight is a candidate, healthy or not.
//!
//! Candidates are recomputed on events (config update, health verdict,
//! ejection and its end) and handed to the policy, so a pick does no
//! filtering of its own.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::endpoint::{lock, Endpoint};
use crate::health::{active, outlier, Check, HealthSettings, OutlierSettings};
use crate::policy::{Pick, Policy, PolicyKind, PolicyOptions};

/// Everything that defines a pool's behaviour; plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The backends, in order.
    pub backends: Vec<Backend>,
    /// The balancing policy.
    pub policy: PolicyKind,
    /// Policy tunables (slow start among them).
    pub options: PolicyOptions,
    /// Active health checks.
    pub health: HealthSettings,
    /// Passive health.
    pub outlier: OutlierSettings,
    /// Percent of healthy primaries below which all primaries take traffic
    /// (0 = never).
    pub panic_threshold: u32,
}

impl PoolConfig {
    /// A pool of `backends` with `policy` and default settings.
    pub fn new(backends: Vec<Backend>, policy: PolicyKind) -> Self {
        PoolConfig {
            backends,
            policy,
            options: PolicyOptions::default(),
            health: HealthSettings::default(),
            outlier: OutlierSettings::default(),
            panic_threshold: 0,
        }
    }

    /// Checks the config for what a pool cannot run with.
    pub fn validate(&self) -> Result<(), PoolError> {
        let mut seen = HashSet::new();
        for b in &self.backends {
            if !seen.insert(b.addr) {
                return Err(PoolError::DuplicateBackend(b.addr));
            }
        }
        if self.panic_threshold > 100 {
            return Err(PoolError::Invalid(
                "panic_threshold",
                "is a percentage from 0 to 100",
            ));
        }
        if self.outlier.max_ejected_percent > 100 {
            return Err(PoolError::Invalid(
                "max_ejected_percent",
                "is a percentage from 0 to 100",
            ));
        }
        if self.options.slow_start_min_percent > 100 {
            return Err(PoolError::Invalid(
                "slow_start_min_percent",
                "is a percentage from 0 to 100",
            ));
        }
        if !(self.options.p2c_bias.is_finite() && self.options.p2c_bias >= 0.0) {
            return Err(PoolError::Invalid("p2c_bias", "must be 0 or more"));
        }
        if !(self.options.ring_hash_c.is_finite() && self.options.ring_hash_c >= 1.0) {
            return Err(PoolError::Invalid("ring_hash_c", "must be 1.0 or more"));
        }
        if self.health.check != Check::None {
            if self.health.interval.is_zero() {
                return Err(PoolError::Invalid("health interval", "must be above 0"));
            }
            if self.health.timeout.is_zero() {
                return Err(PoolError::Invalid("health timeout", "must be above 0"));
            }
            if self.health.rise == 0 || self.health.fall == 0 {
                return Err(PoolError::Invalid("rise/fall", "must be 1 or more"));
            }
        }
        Ok(())
    }
}

/// A pool config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Two backends share an address.
    #[error("backend {0} is listed twice")]
    DuplicateBackend(SocketAddr),
    /// A setting is out of range.
    #[error("{0} {1}")]
    Invalid(&'static str, &'static str),
}

/// How the pool sees one backend now (for `/backends` and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Takes traffic.
    Up,
    /// Failed its active checks.
    Down,
    /// Ejected by passive health.
    Ejected,
    /// Weight 0: finishing open connections only.
    Draining,
}

/// A running pool.
#[derive(Debug)]
pub struct Pool {
    config: Mutex<PoolConfig>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    policy: ArcSwap<Box<dyn Policy>>,
    candidates: ArcSwap<Vec<Arc<Endpoint>>>,
    panicking: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts a pool. Health checks and ejection timers run on the current
    /// tokio runtime; outside one, the pool works without them.
    pub fn new(config: PoolConfig) -> Result<Arc<Pool>, PoolError> {
        config.validate()?;
        let policy = config.policy.build(config.options);
        let pool = Arc::new(Pool {
            config: Mutex::new(config.clone()),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            policy: ArcSwap::from_pointee(policy),
            candidates: ArcSwap::from_pointee(Vec::new()),
            panicking: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        pool.install(config, false);
        Ok(pool)
    }

    /// Applies a new config: endpoints whose address stays keep their state
    /// (load, health, ejection, latency, slow start); new ones start in slow
    /// start; removed ones take no new connections, and their open ones
    /// finish. On error nothing changes.
    pub fn update(self: &Arc<Self>, config: PoolConfig) -> Result<(), PoolError> {
        config.validate()?;
        self.install(config, true);
        Ok(())
    }

    fn install(self: &Arc<Self>, config: PoolConfig, ramp_new: bool) {
        let now = Instant::now();
        let old: HashMap<SocketAddr, Arc<Endpoint>> = self
            .endpoints
            .load()
            .iter()
            .map(|e| (e.addr(), Arc::clone(e)))
            .collect();
        let endpoints: Vec<Arc<Endpoint>> = config
            .backends
            .iter()
            .map(|b| match old.get(&b.addr) {
                Some(e) => {
                    e.set_spec(b);
                    Arc::clone(e)
                }
                None => {
                    let e = Arc::new(Endpoint::new(b));
                    if ramp_new && !old.is_empty() {
                        e.start_slow_start(now);
                    }
                    e
                }
            })
            .collect();
        let mut current = lock(&self.config);
        if current.policy != config.policy || current.options != config.options {
            self.policy
                .store(Arc::new(config.policy.build(config.options)));
        }
        let health_changed = current.health != config.health;
        let endpoints_changed =
            old.len() != endpoints.len() || endpoints.iter().any(|e| !old.contains_key(&e.addr()));
        *current = config;
        drop(current);
        self.endpoints.store(Arc::new(endpoints));
        if health_changed || endpoints_changed {
            self.restart_checks();
        }
        self.refresh();
    }

    /// (Re)starts one checker per endpoint. Checkers of endpoints still
    /// present keep their verdict; without checks every endpoint is up.
    fn restart_checks(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        for t in tasks.drain(..) {
            t.abort();
        }
        let health = lock(&self.config).health.clone();
        let endpoints = self.endpoints.load();
        if health.check == Check::None {
            for e in endpoints.iter() {
                e.set_checked_up(true);
            }
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for e in endpoints.iter() {
            tasks.push(rt.spawn(active::run(
                Arc::downgrade(self),
                Arc::clone(e),
                health.clone(),
            )));
        }
    }

    /// Recomputes the candidates from the endpoints' state at this moment
    /// and hands them to the policy.
    pub fn refresh(self: &Arc<Self>) {
        let now = Instant::now();
        let endpoints = self.endpoints.load();
        let panic_threshold = lock(&self.config).panic_threshold as usize;
        // End ejections that are over; their backends ramp up again.
        let mut next_expiry: Option<Instant> = None;
        for e in endpoints.iter() {
            let mut o = e.outlier();
            match o.ejected_until {
                Some(t) if t <= now && o.returning => {
                    // `ejected_until` stays, in the past: it dates the last
                    // ejection for the growth reset.
                    o.returning = false;
                    drop(o);
                    e.start_slow_start(now);
                }
                Some(t) if t > now => next_expiry = Some(next_expiry.map_or(t, |n| n.min(t))),
                _ => {}
            }
        }
        let live = |backup: bool| {
            endpoints
                .iter()
                .filter(move |e| e.is_backup() == backup && e.weight() > 0)
        };
        let live_primaries = live(false).count();
        let up_primaries: Vec<_> = live(false)
            .filter(|e| e.is_available(now))
            .cloned()
            .collect();
        let panicking = panic_threshold > 0
            && live_primaries > 0
            && up_primaries.len() * 100 < panic_threshold * live_primaries
            && !(up_primaries.is_empty() && live(true).any(|e| e.is_available(now)));
        let cands: Vec<Arc<Endpoint>> = if panicking {
            live(false).cloned().collect()
        } else if !up_primaries.is_empty() {
            up_primaries
        } else {
            live(true)
                .filter(|e| e.is_available(now))
                .cloned()
                .collect()
        };
        self.panicking.store(panicking, Relaxed);
        self.policy.load().update(&cands);
        self.candidates.store(Arc::new(cands));
        if let Some(at) = next_expiry {
            self.refresh_at(at);
        }
    }

    fn refresh_at(self: &Arc<Self>, at: Instant) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(pool) = weak.upgrade() {
                pool.refresh();
            }
        });
    }

    /// Chooses a backend for a connection with `key`, never one in `skip`.
    pub fn pick(&self, key: u64, skip: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        self.policy.load().pick(&Pick {
            key,
            skip,
            now: Instant::now(),
        })
    }

    /// Records a successful connect to `ep` that took `rtt`.
    pub fn report_success(&self, ep: &Endpoint, rtt: Duration) {
        outlier::on_success(&mut ep.outlier());
        let decay = lock(&self.config).options.ewma_decay;
        ep.observe_rtt(rtt, Instant::now(), decay);
    }

    /// Records a failed connect to `ep`; enough failures in a row eject it.
    pub fn report_failure(self: &Arc<Self>, ep: &Endpoint) {
        ep.note_connect_failure();
        self.report_error(ep);
    }

    /// Records a failure after connecting (a 5xx response, a reset): it
    /// counts toward ejection like a failed connect.
    pub fn report_error(self: &Arc<Self>, ep: &Endpoint) {
        let now = Instant::now();
        let settings = lock(&self.config).outlier.clone();
        let endpoints = self.endpoints.load();
        let ejected = endpoints.iter().filter(|e| e.is_ejected(now)).count();
        let until =
            outlier::on_failure(&mut ep.outlier(), &settings, now, ejected, endpoints.len());
        if let Some(until) = until {
            tracing::warn!(backend = %ep.addr(), until = ?until.saturating_duration_since(now), "backend ejected after consecutive failures");
            self.refresh();
        }
    }

    /// Records an active-check verdict (called by the checkers).
    pub(crate) fn set_checked(self: &Arc<Self>, ep: &Arc<Endpoint>, up: bool) {
        if ep.set_checked_up(up) {
            if up {
                tracing::info!(backend = %ep.addr(), "backend up");
                ep.start_slow_start(Instant::now());
            } else {
                tracing::warn!(backend = %ep.addr(), "backend down");
            }
            self.refresh();
        }
    }

    /// All configured endpoints, in config order.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// The endpoints that may take new connections now.
    pub fn candidates(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.candidates.load_full()
    }

    /// Whether the pool is below its panic threshold.
    pub fn is_panicking(&self) -> bool {
        self.panicking.load(Relaxed)
    }

    /// The config in force.
    pub fn config(&self) -> PoolConfig {
        lock(&self.config).clone()
    }

    /// How the pool sees `ep` now.
    pub fn health_of(&self, ep: &Endpoint) -> HealthState {
        if !ep.checked_up() {
            HealthState::Down
        } else if ep.is_ejected(Instant::now()) {
            HealthState::Ejected
        } else if ep.weight() == 0 {
            HealthState::Draining
        } else {
            HealthState::Up
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests;
