//! Checks of specs that need no store: names, subnets, gateways, MTUs,
//! VNIs, ports, health checks and replicas. The operations run these
//! before touching the store; stacks run them over every object first.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::alloc::MAX_VNI;
use crate::model::{self, EndpointMode, Service};
use crate::spec::NetworkSpec;

use super::OpError;

/// The narrowest prefix a network may have.
pub const MIN_PREFIX: u8 = 8;
/// The widest prefix a network may have (/29: six addresses).
pub const MAX_PREFIX: u8 = 29;
/// The MTUs a network may fix.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;

/// A name of `kind` (network, service, stack): [`model::valid_name`] and
/// no `.`, since names become parts of namespace and DNS names.
pub fn name(kind: &str, name: &str) -> Result<(), OpError> {
    if model::valid_name(name) && !name.contains('.') {
        return Ok(());
    }
    Err(OpError::invalid(
        "name",
        format!(
            "{kind} name `{name}` is invalid: use 1 to 63 of A-Z a-z 0-9 _ -, not starting with `-`"
        ),
    ))
}

/// The default gateway of `subnet`: its first host address.
pub fn default_gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// A network spec in itself (overlap and VNI holders need the store).
pub fn network_spec(spec: &NetworkSpec) -> Result<(), OpError> {
    name("network", &spec.name)?;
    if spec.encrypted {
        // Refused rather than stored and never built: netd's model has no
        // WireGuard mesh between nodes yet.
        return Err(OpError::invalid(
            "encrypted",
            format!(
                "network `{}`: encrypted networks are not built by netd yet (shoal-overlay builds them from a file)",
                spec.name
            ),
        ));
    }
    if let Some(subnet) = spec.subnet {
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&subnet.prefix_len()) {
            return Err(OpError::invalid(
                "subnet",
                format!(
                    "subnet {subnet} has a prefix out of range: use /{MIN_PREFIX} to /{MAX_PREFIX}"
                ),
            ));
        }
        if subnet.trunc() != subnet {
            return Err(OpError::invalid(
                "subnet",
                format!(
                    "subnet {subnet} has host bits set (did you mean {}?)",
                    subnet.trunc()
                ),
            ));
        }
    }
    if let Some(gw) = spec.gateway {
        let Some(subnet) = spec.subnet else {
            return Err(OpError::invalid(
                "gateway",
                format!("gateway {gw} needs a subnet to be given too"),
            ));
        };
        if !subnet.contains(&gw) {
            return Err(OpError::invalid(
                "gateway",
                format!("gateway {gw} is outside subnet {subnet}"),
            ));
        }
        if gw == subnet.network() || gw == subnet.broadcast() {
            return Err(OpError::invalid(
                "gateway",
                format!("gateway {gw} is the network or broadcast address of subnet {subnet}"),
            ));
        }
    }
    if let Some(mtu) = spec.mtu {
        if !MTU_RANGE.contains(&mtu) {
            return Err(OpError::invalid(
                "mtu",
                format!(
                    "MTU {mtu} is out of range ({} to {})",
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            ));
        }
    }
    if let Some(vni) = spec.vni {
        if vni == 0 || vni > MAX_VNI {
            return Err(OpError::invalid(
                "vni",
                format!("VNI {vni} is out of range (1 to {MAX_VNI})"),
            ));
        }
    }
    Ok(())
}

/// A service in itself (network existence and port holders need the
/// store).
pub fn service(svc: &Service) -> Result<(), OpError> {
    name("service", &svc.name)?;
    if svc.networks.is_empty() {
        return Err(OpError::invalid(
            "networks",
            format!("service `{}` needs at least one network", svc.name),
        ));
    }
    for (net, vip) in &svc.networks {
        name("network", net).map_err(|e| match e {
            OpError::Invalid { message, .. } => OpError::invalid("networks", message),
            other => other,
        })?;
        if let (EndpointMode::Dnsrr, Some(vip)) = (svc.endpoint_mode, vip) {
            return Err(OpError::invalid(
                "networks",
                format!(
                    "service `{}` uses dnsrr, which has no VIPs, but asks for VIP {vip} in network `{net}`",
                    svc.name
                ),
            ));
        }
    }
    ports(svc)?;
    health(svc)?;
    if svc.replicas > 0 && svc.command.first().is_none_or(|c| c.is_empty()) {
        return Err(OpError::invalid(
            "command",
            format!(
                "service `{}` asks for {} replicas but has no command to run",
                svc.name, svc.replicas
            ),
        ));
    }
    Ok(())
}

fn ports(svc: &Service) -> Result<(), OpError> {
    let (mut targets, mut published, mut names) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for p in &svc.ports {
        if p.target == 0 || p.published == Some(0) {
            return Err(OpError::invalid("ports", "port 0 cannot be used"));
        }
        if !targets.insert(p.target) {
            return Err(OpError::invalid(
                "ports",
                format!("target port {} is listed twice", p.target),
            ));
        }
        if let Some(n) = p.published {
            if !published.insert(n) {
                return Err(OpError::invalid(
                    "ports",
                    format!("published port {n} is listed twice"),
                ));
            }
        }
        if let Some(n) = &p.name {
            if !model::valid_name(n) || n.contains('.') {
                return Err(OpError::invalid(
                    "ports",
                    format!("port name `{n}` is invalid: use 1 to 63 of A-Z a-z 0-9 _ -"),
                ));
            }
            if !names.insert(n) {
                return Err(OpError::invalid(
                    "ports",
                    format!("port name `{n}` is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

fn health(svc: &Service) -> Result<(), OpError> {
    let h = &svc.health;
    let bad = |m: String| Err(OpError::invalid("health", m));
    if h.interval_ms == 0 || h.timeout_ms == 0 {
        return bad("health check interval and timeout must be above 0 ms".into());
    }
    if h.timeout_ms > h.interval_ms {
        return bad(format!(
            "health check timeout {} ms is longer than its interval {} ms",
            h.timeout_ms, h.interval_ms
        ));
    }
    if h.rise == 0 || h.fall == 0 {
        return bad("health check rise and fall must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: Option<&str>, gateway: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: "front".into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            gateway: gateway.map(|s| s.parse().unwrap()),
            vni: None,
            encrypted: false,
            mtu: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn network_specs() {
        assert!(network_spec(&spec(Some("10.77.0.0/24"), Some("10.77.0.9"))).is_ok());
        for (s, g, field, words) in [
            (Some("10.0.0.0/30"), None, "subnet", "out of range"),
            (Some("10.0.0.0/7"), None, "subnet", "out of range"),
            (
                Some("10.77.0.5/24"),
                None,
                "subnet",
                "did you mean 10.77.0.0/24",
            ),
            (
                Some("10.77.0.0/24"),
                Some("10.78.0.1"),
                "gateway",
                "outside",
            ),
            (
                Some("10.77.0.0/24"),
                Some("10.77.0.255"),
                "gateway",
                "broadcast",
            ),
            (None, Some("10.77.0.1"), "gateway", "needs a subnet"),
        ] {
            let e = network_spec(&spec(s, g)).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(e.to_string().contains(words), "{e}");
        }
        let mut s = spec(None, None);
        s.name = "a.b".into();
        assert_eq!(network_spec(&s).unwrap_err().field(), Some("name"));
        let mut s = spec(None, None);
        s.mtu = Some(100);
        assert_eq!(network_spec(&s).unwrap_err().field(), Some("mtu"));
        let mut s = spec(None, None);
        s.vni = Some(0);
        assert_eq!(network_spec(&s).unwrap_err().field(), Some("vni"));
    }
}
