//! What users ask for, before the cluster fills in the rest: a network to
//! create (gateway and VNI may be left to netd), a service to create (a
//! [`Service`](crate::model::Service) whose VIPs may be left to netd), and a
//! partial service update. The API, the CLI and compose files all produce
//! these; [`crate::ops`] turns them into stored model values.
//!
//! Also the short forms the CLI and compose accept: ports
//! (`8080:8000/http`), and `key=value` labels.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::model::Policy;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{ClientAddress, EndpointMode, HealthCheck, Port, PortMode};

/// A network to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Its name.
    pub name: String,
    /// Its subnet; default: a free /24 from netd's pool (see
    /// [`crate::ops`]).
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The gateway; default: the subnet's first host address.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The VNI; default: the lowest free one from 4096.
    #[serde(default)]
    pub vni: Option<u32>,
    /// VXLAN over the WireGuard mesh.
    #[serde(default)]
    pub encrypted: bool,
    /// A fixed MTU instead of the underlay's minus the overhead.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A change to a service: every field given replaces the current value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdate {
    /// New ports.
    #[serde(default)]
    pub ports: Option<Vec<Port>>,
    /// New balancing policy.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// New health check.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// New client-address mode.
    #[serde(default)]
    pub client_address: Option<ClientAddress>,
    /// New endpoint mode (VIPs are allocated or released to match).
    #[serde(default)]
    pub endpoint_mode: Option<EndpointMode>,
    /// New replica count.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// New command for netd-run replicas.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// New labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A short form that does not parse; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadForm(pub String);

/// Parses a port: `TARGET`, `PUBLISHED:TARGET`, either followed by
/// `/tcp` or `/http` (default tcp).
pub fn parse_port(s: &str) -> Result<Port, BadForm> {
    let bad = |why: &str| {
        BadForm(format!(
            "port `{s}`: {why} (expected [PUBLISHED:]TARGET[/tcp|/http])"
        ))
    };
    let (ports, mode) = match s.split_once('/') {
        None => (s, PortMode::Tcp),
        Some((p, "tcp")) => (p, PortMode::Tcp),
        Some((p, "http")) => (p, PortMode::Http),
        Some((_, m)) => return Err(bad(&format!("unknown protocol `{m}`"))),
    };
    let number = |p: &str| -> Result<u16, BadForm> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(&format!("`{p}` is not a port number (1-65535)"))),
            Ok(n) => Ok(n),
        }
    };
    let (published, target) = match ports.split_once(':') {
        None => (None, number(ports)?),
        Some((p, t)) => (Some(number(p)?), number(t)?),
    };
    Ok(Port {
        name: None,
        target,
        published,
        mode,
    })
}

/// Parses a `key=value` label.
pub fn parse_label(s: &str) -> Result<(String, String), BadForm> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(BadForm(format!("label `{s}`: expected KEY=VALUE"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_every_short_form() {
        let p = parse_port("8080:8000").unwrap();
        assert_eq!(
            (p.published, p.target, p.mode),
            (Some(8080), 8000, PortMode::Tcp)
        );
        let p = parse_port("8000/http").unwrap();
        assert_eq!(
            (p.published, p.target, p.mode),
            (None, 8000, PortMode::Http)
        );
        for bad in ["", "x", "0", "70000", "1:2:3", "80/udp", ":80"] {
            let e = parse_port(bad).unwrap_err();
            assert!(e.0.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_label("=x").is_err() && parse_label("x").is_err());
    }
}
