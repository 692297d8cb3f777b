//! Where a hash policy takes its key in HTTP mode: a header, a cookie, or
//! the client address (`header:X-User`, `cookie:sid`, `client-ip`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{hash_bytes, key_of_ip};

/// The source of the balancing key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HashKey {
    /// The client's IP address.
    #[default]
    ClientIp,
    /// A request header's value (falls back to the client IP when absent).
    Header(String),
    /// A cookie's value (falls back to the client IP when absent).
    Cookie(String),
}

/// A hash key specification that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash key `{0}`: expected `client-ip`, `header:NAME` or `cookie:NAME`")]
pub struct BadHashKey(pub String);

impl FromStr for HashKey {
    type Err = BadHashKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let token = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':' && b != b'=' && b != b';')
        };
        match s.split_once(':') {
            None if s == "client-ip" => Ok(HashKey::ClientIp),
            Some(("header", n)) if token(n) => Ok(HashKey::Header(n.to_ascii_lowercase())),
            Some(("cookie", n)) if token(n) => Ok(HashKey::Cookie(n.to_string())),
            _ => Err(BadHashKey(s.to_string())),
        }
    }
}

impl TryFrom<String> for HashKey {
    type Error = BadHashKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HashKey> for String {
    fn from(k: HashKey) -> String {
        k.to_string()
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client-ip"),
            HashKey::Header(n) => write!(f, "header:{n}"),
            HashKey::Cookie(n) => write!(f, "cookie:{n}"),
        }
    }
}

impl HashKey {
    /// The key for a request with these headers from `client`.
    pub fn key<'a>(&self, headers: impl Fn(&str) -> Vec<&'a [u8]>, client: Option<IpAddr>) -> u64 {
        let fallback = || client.map(key_of_ip).unwrap_or(0);
        match self {
            HashKey::ClientIp => fallback(),
            HashKey::Header(name) => match headers(name).first() {
                Some(v) => hash_bytes(v),
                None => fallback(),
            },
            HashKey::Cookie(name) => headers("cookie")
                .into_iter()
                .find_map(|h| cookie_value(h, name.as_bytes()))
                .map(hash_bytes)
                .unwrap_or_else(fallback),
        }
    }
}

/// The value of cookie `name` in one `Cookie` header.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("client-ip".parse(), Ok(HashKey::ClientIp));
        assert_eq!(
            "header:X-User".parse(),
            Ok(HashKey::Header("x-user".into()))
        );
        assert_eq!("cookie:sid".parse(), Ok(HashKey::Cookie("sid".into())));
        for bad in ["", "header:", "cookie:a b", "ip", "header:a:b"] {
            assert!(bad.parse::<HashKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_come_from_the_named_source_with_client_fallback() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let none = |_: &str| Vec::new();
        let user = |n: &str| {
            if n == "x-user" {
                vec![&b"alice"[..]]
            } else {
                Vec::new()
            }
        };
        let cookie = |n: &str| {
            if n == "cookie" {
                vec![&b"a=1; sid=xyz ; b=2"[..]]
            } else {
                Vec::new()
            }
        };
        assert_eq!(HashKey::ClientIp.key(user, Some(ip)), key_of_ip(ip));
        assert_eq!(
            HashKey::Header("x-user".into()).key(user, Some(ip)),
            hash_bytes(b"alice")
        );
        assert_eq!(
            HashKey::Header("x-user".into()).key(none, Some(ip)),
            key_of_ip(ip)
        );
        assert_eq!(
            HashKey::Cookie("sid".into()).key(cookie, Some(ip)),
            hash_bytes(b"xyz")
        );
        assert_eq!(
            HashKey::Cookie("nope".into()).key(cookie, Some(ip)),
            key_of_ip(ip)
        );
    }

    #[test]
    fn cookie_parsing_is_exact() {
        assert_eq!(cookie_value(b"sid=1", b"sid"), Some(&b"1"[..]));
        assert_eq!(cookie_value(b"xsid=1; sid=2", b"sid"), Some(&b"2"[..]));
        assert_eq!(cookie_value(b"sid", b"sid"), None);
        assert_eq!(cookie_value(b";;=;", b"sid"), None);
    }
}
