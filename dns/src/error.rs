//! Errors at the crate's edges, each naming the input that failed.

use std::fmt;
use std::path::PathBuf;

/// Where in a [`RecordSet`](crate::RecordSet) a problem is, spelled like the
/// config file's keys: `network[0].service[1].tasks[2].name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// Index of the network, if the problem is inside one.
    pub network: Option<usize>,
    /// Index of the service in that network, if inside one.
    pub service: Option<usize>,
    /// The field, relative to the innermost of the above (e.g. `vip`,
    /// `tasks[2].name`).
    pub field: String,
}

impl Location {
    pub(crate) fn top(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            ..Self::default()
        }
    }

    pub(crate) fn network(network: usize, field: impl Into<String>) -> Self {
        Self {
            network: Some(network),
            service: None,
            field: field.into(),
        }
    }

    pub(crate) fn service(network: usize, service: usize, field: impl Into<String>) -> Self {
        Self {
            network: Some(network),
            service: Some(service),
            field: field.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(n) = self.network {
            write!(f, "network[{n}]")?;
            sep = ".";
        }
        if let Some(s) = self.service {
            write!(f, "{sep}service[{s}]")?;
            sep = ".";
        }
        if !self.field.is_empty() {
            write!(f, "{sep}{}", self.field)?;
        }
        Ok(())
    }
}

/// What is wrong with a record set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A name is not a valid DNS name of the kind expected.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two things in one network answer to the same name.
    #[error("duplicate name {name:?} in this network")]
    Duplicate {
        /// The name as given.
        name: String,
    },
    /// Two networks share a name.
    #[error("duplicate network name {name:?}")]
    DuplicateNetwork {
        /// The network's name.
        name: String,
    },
    /// `endpoint_mode` is `vip` but no VIP is given.
    #[error("endpoint_mode \"vip\" needs a vip")]
    MissingVip,
    /// A VIP is given to a service in `dnsrr` mode, which has none.
    #[error("a vip is set but endpoint_mode is \"dnsrr\"")]
    VipInDnsrr,
    /// `also` names a network that does not exist.
    #[error("unknown network {name:?}")]
    UnknownNetwork {
        /// The name as given.
        name: String,
    },
    /// The TTL is above 2^31 - 1 (RFC 2181 section 8).
    #[error("ttl {ttl} is above 2147483647")]
    TtlRange {
        /// The TTL as given.
        ttl: u32,
    },
}

/// A record set that cannot be served, and where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct RecordError {
    /// Where the problem is.
    pub location: Location,
    /// What the problem is.
    pub problem: Problem,
}

impl RecordError {
    pub(crate) fn new(location: Location, problem: Problem) -> Self {
        Self { location, problem }
    }
}

/// A config file that cannot be used. Displays on one line as
/// `FILE:LINE: FIELD: MESSAGE`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but a field is wrong.
    #[error("{}{}: {field}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the problem, when known.
        line: Option<usize>,
        /// The field, as a path of keys (e.g. `network[0].service[0].vip`).
        field: String,
        /// What is wrong, on one line.
        message: String,
    },
}
