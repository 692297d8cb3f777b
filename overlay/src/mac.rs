//! Ethernet (MAC) addresses: parsing, printing, and the Docker-style
//! derivation from an IPv4 address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A 48-bit Ethernet address, printed as `02:42:0a:4d:00:0c`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The address Docker gives a container: `02:42` then the four bytes of
    /// its IPv4 address. Locally administered and unicast, and known to every
    /// node in advance because it follows from the IP alone.
    pub fn from_ipv4(ip: Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([0x02, 0x42, a, b, c, d])
    }

    /// Builds from raw bytes as the kernel reports them; `None` unless six.
    pub fn from_bytes(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }

    /// True for a group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not six `:`-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex bytes like 02:42:0a:4d:00:0c)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let bad = || BadMac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_from_ipv4_as_docker_does() {
        let mac = Mac::from_ipv4("10.77.0.12".parse().unwrap());
        assert_eq!(mac.to_string(), "02:42:0a:4d:00:0c");
        assert!(!mac.is_multicast());
    }

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: Mac = "02:42:0A:4d:00:0c".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0x0a, 0x4d, 0x00, 0x0c]);
        assert_eq!(mac.to_string(), "02:42:0a:4d:00:0c");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "02:42:0a:4d:00",
            "02:42:0a:4d:00:0c:01",
            "2:42:0a:4d:00:0c",
            "zz:42:0a:4d:00:0c",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(BadMac(bad.to_string())), "{bad}");
        }
    }
}
