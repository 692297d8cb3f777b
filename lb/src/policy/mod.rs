//! Balancing policies: one small trait, one file per algorithm.
//!
//! A [`Policy`] is handed the current *candidates* (the endpoints the pool
//! decided may take traffic: healthy, not ejected, not draining, primaries
//! or backups) by [`Policy::update`] whenever they change, and chooses one per
//! connection in [`Policy::pick`]. Policies keep whatever state they need
//! (cursors, tables) behind interior mutability, and carry it across updates.
//! Per-backend load (active connections, latency, slow start) lives on the
//! [`Endpoint`]s themselves, so it survives set updates and is shared by every
//! policy.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::endpoint::Endpoint;

mod least_conn;
mod maglev;
mod p2c;
mod peak_ewma;
mod random;
mod ring_hash;
mod round_robin;
mod weighted;

pub use least_conn::LeastConn;
pub use maglev::{Maglev, MAGLEV_TABLE_SIZE};
pub use p2c::P2c;
pub use peak_ewma::PeakEwmaP2c;
pub use random::Random;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

/// What a policy knows about one pick.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The balancing key (a hash of the client address in TCP mode).
    pub key: u64,
    /// Backends already tried for this connection; never pick these.
    pub skip: &'a [SocketAddr],
    /// The time of the pick (slow start, latency decay).
    pub now: Instant,
}

impl<'a> Pick<'a> {
    /// A pick with `key` at `now`, skipping nothing.
    pub fn new(key: u64, now: Instant) -> Self {
        Pick {
            key,
            skip: &[],
            now,
        }
    }

    /// Whether `ep` must be skipped.
    pub fn skips(&self, ep: &Endpoint) -> bool {
        self.skip.contains(&ep.addr())
    }
}

/// A balancing algorithm.
pub trait Policy: Send + Sync + fmt::Debug {
    /// Replaces the candidate set. State tied to an address (cursors, smooth
    /// weights) carries over.
    fn update(&self, candidates: &[Arc<Endpoint>]);
    /// Chooses a candidate not in `pick.skip`, or `None` if none is left.
    fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>>;
}

/// Tunables shared by the policies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyOptions {
    /// Slow-start window (0 = off): a recovered or new backend's weight ramps
    /// up over it. Applies to `weighted`, `least-conn`, `p2c` and `peak-ewma`.
    #[serde(with = "humantime_serde_compat")]
    pub slow_start: Duration,
    /// Weight a slow start begins at, in percent of the full weight.
    pub slow_start_min_percent: u32,
    /// Envoy's active-request bias for `p2c`: score = weight / (active + 1)^bias.
    pub p2c_bias: f64,
    /// Decay time of the `peak-ewma` latency estimate.
    #[serde(with = "humantime_serde_compat")]
    pub ewma_decay: Duration,
    /// `ring-hash` load bound: no backend takes more than `c × average`.
    pub ring_hash_c: f64,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            slow_start: Duration::ZERO,
            slow_start_min_percent: 10,
            p2c_bias: 1.0,
            ewma_decay: Duration::from_secs(10),
            ring_hash_c: 1.25,
        }
    }
}

impl PolicyOptions {
    /// `ep`'s weight at `now` in thousandths, with slow start applied.
    pub fn weight_milli(&self, ep: &Endpoint, now: Instant) -> u64 {
        ep.effective_weight_milli(now, self.slow_start, self.slow_start_min_percent)
    }
}

/// The policies by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Each candidate in turn, weights ignored.
    RoundRobin,
    /// nginx's smooth weighted round-robin.
    Weighted,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Uniformly at random, in proportion to weight.
    Random,
    /// Power of two random choices on active connections.
    P2c,
    /// Power of two random choices on latency × load (linkerd).
    PeakEwma,
    /// Maglev consistent hashing on the client key.
    Maglev,
    /// Consistent hash ring with bounded load.
    RingHash,
}

impl PolicyKind {
    /// Every policy, in documentation order.
    pub const ALL: [PolicyKind; 8] = [
        PolicyKind::RoundRobin,
        PolicyKind::Weighted,
        PolicyKind::LeastConn,
        PolicyKind::Random,
        PolicyKind::P2c,
        PolicyKind::PeakEwma,
        PolicyKind::Maglev,
        PolicyKind::RingHash,
    ];

    /// The name used on the command line and in config files.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::Weighted => "weighted",
            PolicyKind::LeastConn => "least-conn",
            PolicyKind::Random => "random",
            PolicyKind::P2c => "p2c",
            PolicyKind::PeakEwma => "peak-ewma",
            PolicyKind::Maglev => "maglev",
            PolicyKind::RingHash => "ring-hash",
        }
    }

    /// Whether the policy reads the balancing key (hash policies).
    pub fn uses_key(self) -> bool {
        matches!(self, PolicyKind::Maglev | PolicyKind::RingHash)
    }

    /// Builds an empty policy of this kind.
    pub fn build(self, opts: PolicyOptions) -> Box<dyn Policy> {
        match self {
            PolicyKind::RoundRobin => Box::new(RoundRobin::default()),
            PolicyKind::Weighted => Box::new(Weighted::new(opts)),
            PolicyKind::LeastConn => Box::new(LeastConn::new(opts)),
            PolicyKind::Random => Box::new(Random::default()),
            PolicyKind::P2c => Box::new(P2c::new(opts)),
            PolicyKind::PeakEwma => Box::new(PeakEwmaP2c::new(opts)),
            PolicyKind::Maglev => Box::new(Maglev::default()),
            PolicyKind::RingHash => Box::new(RingHash::new(opts)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}` (known: round-robin, weighted, least-conn, random, p2c, peak-ewma, maglev, ring-hash)")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// Candidates as an immutable snapshot, swapped on update: picks never wait
/// for an update.
pub(crate) type Snapshot = arc_swap::ArcSwap<Vec<Arc<Endpoint>>>;

/// A fresh empty snapshot.
pub(crate) fn empty_snapshot() -> Snapshot {
    arc_swap::ArcSwap::from_pointee(Vec::new())
}

/// Chooses two distinct random indices among the candidates not skipped
/// (one when only one is left), for the P2C family.
pub(crate) fn two_choices(
    cands: &[Arc<Endpoint>],
    pick: &Pick<'_>,
) -> Option<(usize, Option<usize>)> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let n = cands.len();
    if pick.skip.is_empty() {
        return match n {
            0 => None,
            1 => Some((0, None)),
            _ => {
                let a = rng.gen_range(0..n);
                let b = (a + rng.gen_range(1..n)) % n;
                Some((a, Some(b)))
            }
        };
    }
    let open: Vec<usize> = (0..n).filter(|&i| !pick.skips(&cands[i])).collect();
    match open.len() {
        0 => None,
        1 => Some((open[0], None)),
        m => {
            let a = rng.gen_range(0..m);
            let b = (a + rng.gen_range(1..m)) % m;
            Some((open[a], Some(open[b])))
        }
    }
}

/// Serde adapter for durations written like `200ms` or `2s`.
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("duration `{s}`: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the policies' unit tests.
    use super::*;
    use crate::backend::Backend;

    /// Endpoints on 127.0.0.1 ports 1.. with the given weights.
    pub fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = SocketAddr::from(([127, 0, 0, 1], i as u16 + 1));
                Arc::new(Endpoint::new(&Backend::new(addr).with_weight(w)))
            })
            .collect()
    }

    /// The index (port - 1) of a picked endpoint.
    pub fn idx(ep: &Endpoint) -> usize {
        usize::from(ep.addr().port() - 1)
    }

    /// Picks `n` times with key 0 and returns the indices.
    pub fn sequence(p: &dyn Policy, n: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..n)
            .map(|_| idx(&p.pick(&Pick::new(0, now)).unwrap()))
            .collect()
    }

    /// Picks `n` times with keys 0..n and counts picks per index.
    pub fn counts(p: &dyn Policy, backends: usize, n: usize) -> Vec<usize> {
        let now = Instant::now();
        let mut c = vec![0; backends];
        for k in 0..n {
            let key = crate::hash::mix(k as u64);
            c[idx(&p.pick(&Pick::new(key, now)).unwrap())] += 1;
        }
        c
    }
}
