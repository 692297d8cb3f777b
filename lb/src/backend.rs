//! Backend specifications: an address, a weight and a role, as written on the
//! command line (`ADDR[@WEIGHT][,backup]`) or in a config file.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest weight a backend may have. Weights are relative, so this only
/// bounds arithmetic (weights are multiplied by 1000 for slow start).
pub const MAX_WEIGHT: u32 = 1_000_000;

/// One backend as configured: where it is, how much traffic it should take,
/// and whether it only stands in while no primary is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Backend {
    /// Address connections are proxied to.
    pub addr: SocketAddr,
    /// Relative weight; 0 drains the backend (no new connections).
    pub weight: u32,
    /// A backup takes traffic only while no primary backend is available.
    pub backup: bool,
}

impl Backend {
    /// A primary backend of weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            weight: 1,
            backup: false,
        }
    }

    /// The same backend with another weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The same backend marked as a backup.
    pub fn as_backup(mut self) -> Self {
        self.backup = true;
        self
    }
}

/// Why a backend specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendParseError {
    /// The part before `@` or `,` is not `IP:PORT`.
    #[error("backend `{0}`: address is not IP:PORT")]
    Address(String),
    /// The part after `@` is not a whole number in range.
    #[error("backend `{0}`: weight is not a whole number from 0 to {MAX_WEIGHT}")]
    Weight(String),
    /// Something other than `backup` follows the comma.
    #[error("backend `{0}`: unknown flag (only `backup` is known)")]
    Flag(String),
}

impl FromStr for Backend {
    type Err = BackendParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec = s.trim();
        let (main, flags) = match spec.split_once(',') {
            Some((m, f)) => (m, Some(f)),
            None => (spec, None),
        };
        let (addr, weight) = match main.rsplit_once('@') {
            Some((a, w)) => (a, Some(w)),
            None => (main, None),
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| BackendParseError::Address(s.to_string()))?;
        let weight = match weight {
            None => 1,
            Some(w) => match w.parse::<u32>() {
                Ok(w) if w <= MAX_WEIGHT => w,
                _ => return Err(BackendParseError::Weight(s.to_string())),
            },
        };
        let mut backup = false;
        if let Some(flags) = flags {
            for flag in flags.split(',') {
                match flag.trim() {
                    "backup" => backup = true,
                    _ => return Err(BackendParseError::Flag(s.to_string())),
                }
            }
        }
        Ok(Backend {
            addr,
            weight,
            backup,
        })
    }
}

impl TryFrom<String> for Backend {
    type Error = BackendParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Backend> for String {
    fn from(b: Backend) -> String {
        b.to_string()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.weight)?;
        if self.backup {
            f.write_str(",backup")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_weight_and_backup() {
        let b: Backend = "127.0.0.1:9002@5".parse().unwrap();
        assert_eq!(b.addr, "127.0.0.1:9002".parse().unwrap());
        assert_eq!((b.weight, b.backup), (5, false));
        let b: Backend = "[::1]:80,backup".parse().unwrap();
        assert_eq!((b.weight, b.backup), (1, true));
        let b: Backend = "10.0.0.1:80@0,backup".parse().unwrap();
        assert_eq!((b.weight, b.backup), (0, true));
    }

    #[test]
    fn rejects_bad_specs_naming_the_input() {
        let e = "localhost:80".parse::<Backend>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "backend `localhost:80`: address is not IP:PORT"
        );
        assert!(matches!(
            "1.2.3.4:5@x".parse::<Backend>(),
            Err(BackendParseError::Weight(_))
        ));
        assert!(matches!(
            "1.2.3.4:5@2000000".parse::<Backend>(),
            Err(BackendParseError::Weight(_))
        ));
        assert!(matches!(
            "1.2.3.4:5,primary".parse::<Backend>(),
            Err(BackendParseError::Flag(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:1@3", "[::1]:80@1,backup"] {
            let b: Backend = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
    }
}
