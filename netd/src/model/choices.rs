//! A service's balancing choices as netd stores them: the policy and the
//! health probe of its replicas. These are netd's own types with their own
//! names in the stored JSON, so a change inside shoal-lb cannot change
//! what every node reads from the cluster store; `translate/` maps them to
//! lb's types. The stored names are those of schema 1 (see
//! [`super::SCHEMA`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The balancing policy of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each replica in turn.
    RoundRobin,
    /// Smooth weighted round-robin.
    Weighted,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// At random, in proportion to weight.
    Random,
    /// Power of two random choices on active requests.
    P2c,
    /// Power of two random choices on latency and load.
    PeakEwma,
    /// Maglev consistent hashing on the client.
    Maglev,
    /// Consistent hash ring with bounded load.
    RingHash,
}

impl Policy {
    /// Every policy, in documentation order.
    pub const ALL: [Policy; 8] = [
        Policy::RoundRobin,
        Policy::Weighted,
        Policy::LeastConn,
        Policy::Random,
        Policy::P2c,
        Policy::PeakEwma,
        Policy::Maglev,
        Policy::RingHash,
    ];

    /// Its stored and command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::Weighted => "weighted",
            Policy::LeastConn => "least-conn",
            Policy::Random => "random",
            Policy::P2c => "p2c",
            Policy::PeakEwma => "peak-ewma",
            Policy::Maglev => "maglev",
            Policy::RingHash => "ring-hash",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is none of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}` (known: round-robin, weighted, least-conn, random, p2c, peak-ewma, maglev, ring-hash)")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// How a replica's health is probed; stored as `none`, `tcp` or
/// `http:/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Probe {
    /// Not probed: a replica counts as healthy once attached.
    #[default]
    None,
    /// A TCP connect must succeed.
    Tcp,
    /// `GET path` must answer 2xx.
    Http {
        /// The request path, starting with `/`.
        path: String,
    },
}

/// A probe that is not `none`, `tcp` or `http:/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health check `{0}`: expected `none`, `tcp` or `http:/PATH`")]
pub struct BadProbe(pub String);

impl FromStr for Probe {
    type Err = BadProbe;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "" => Ok(Probe::None),
            "tcp" => Ok(Probe::Tcp),
            _ => match s.strip_prefix("http:") {
                Some(path)
                    if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(Probe::Http {
                        path: path.to_string(),
                    })
                }
                _ => Err(BadProbe(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for Probe {
    type Error = BadProbe;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Probe> for String {
    fn from(p: Probe) -> String {
        p.to_string()
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::None => f.write_str("none"),
            Probe::Tcp => f.write_str("tcp"),
            Probe::Http { path } => write!(f, "http:{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_named() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(
            "fastest".parse::<Policy>().unwrap_err().to_string(),
            "unknown policy `fastest` (known: round-robin, weighted, least-conn, random, p2c, peak-ewma, maglev, ring-hash)"
        );
        for s in ["none", "tcp", "http:/healthz"] {
            assert_eq!(s.parse::<Probe>().unwrap().to_string(), s);
        }
        assert!("http:healthz".parse::<Probe>().is_err());
        assert!("http:/a b".parse::<Probe>().is_err());
        assert!(serde_json::from_str::<Probe>("\"udp\"").is_err());
    }
}
