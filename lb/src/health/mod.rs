//! Health: active checks ([`active`]), passive ejection of failing backends
//! ([`outlier`]), and their settings. Slow start after recovery is applied
//! by the policies through [`crate::endpoint::Endpoint::effective_weight_milli`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::humantime_serde_compat as hts;

pub mod active;
pub mod outlier;

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Check {
    /// No active checks: every backend counts as up unless ejected.
    #[default]
    None,
    /// A TCP connect must succeed.
    Tcp,
    /// `GET path` must answer 2xx.
    Http {
        /// Request path, starting with `/`.
        path: String,
    },
}

/// A health check specification that is not `none`, `tcp` or `http:/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health check `{0}`: expected `none`, `tcp` or `http:/PATH`")]
pub struct BadCheck(pub String);

impl FromStr for Check {
    type Err = BadCheck;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "" => Ok(Check::None),
            "tcp" => Ok(Check::Tcp),
            _ => match s.strip_prefix("http:") {
                Some(path)
                    if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(Check::Http {
                        path: path.to_string(),
                    })
                }
                _ => Err(BadCheck(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for Check {
    type Error = BadCheck;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Check> for String {
    fn from(c: Check) -> String {
        c.to_string()
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::None => f.write_str("none"),
            Check::Tcp => f.write_str("tcp"),
            Check::Http { path } => write!(f, "http:{path}"),
        }
    }
}

/// Active health check settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// The check to run.
    pub check: Check,
    /// Time between checks of one backend.
    #[serde(with = "hts")]
    pub interval: Duration,
    /// A check that takes longer fails.
    #[serde(with = "hts")]
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Random extra delay, from 0 to this, before every check, the first
    /// included, so that checks of many backends do not fire together.
    #[serde(with = "hts")]
    pub jitter: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            check: Check::None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            jitter: Duration::from_millis(200),
        }
    }
}

/// Passive health (outlier detection) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSettings {
    /// Consecutive connect failures that eject a backend (0 = never eject).
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; the n-th lasts n times as long.
    #[serde(with = "hts")]
    pub base_ejection: Duration,
    /// Ejections never last longer than this; a backend that stayed in for
    /// this long starts again from the base time.
    #[serde(with = "hts")]
    pub max_ejection: Duration,
    /// At most this share of the backends is ejected at once (at least one
    /// may always be).
    pub max_ejected_percent: u32,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_specs() {
        assert_eq!("tcp".parse(), Ok(Check::Tcp));
        assert_eq!("none".parse(), Ok(Check::None));
        assert_eq!(
            "http:/healthz".parse(),
            Ok(Check::Http {
                path: "/healthz".into()
            })
        );
        assert!("http:healthz".parse::<Check>().is_err());
        assert!("http:/a b".parse::<Check>().is_err());
        assert!("udp".parse::<Check>().is_err());
    }
}
