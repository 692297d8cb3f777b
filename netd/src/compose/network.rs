//! `networks.<name>`: an overlay network spec.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::labels;
use super::yaml::{self, fail, index_path, key_path, shown, Cx, Entry, Node};
use super::ComposeError;
use crate::model::valid_name;
use crate::spec::NetworkSpec;

/// Docker's option for a fixed MTU.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// Docker's option for the VXLAN id(s) of an overlay network.
const VNI_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// A network with every choice left to netd.
pub(super) fn named(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.to_string(),
        subnet: None,
        gateway: None,
        vni: None,
        encrypted: false,
        mtu: None,
        labels: BTreeMap::new(),
    }
}

/// The message for a name netd cannot store.
pub(super) fn bad_name(name: &str) -> String {
    format!(
        "`{}` is not a valid name: 1 to 63 of A-Z a-z 0-9 _ . -, not starting with . or -",
        shown(name)
    )
}

/// Reads one entry of the top-level `networks`.
pub(super) fn parse(e: &Entry, cx: &mut Cx) -> Result<NetworkSpec, ComposeError> {
    let path = key_path("networks", &e.key);
    if !valid_name(&e.key) {
        return Err(fail(e.key_node, &path, bad_name(&e.key)));
    }
    let mut spec = named(&e.key);
    for f in yaml::mapping(e.value, &path)? {
        let at = key_path(&path, &f.key);
        match f.key.as_str() {
            "driver" => {
                let driver = yaml::string(f.value, &at)?;
                if driver != "overlay" {
                    let why = format!(
                        "driver `{}` is not supported by netd; an overlay network is created",
                        shown(&driver)
                    );
                    cx.warn(&at, why);
                }
            }
            "driver_opts" => driver_opts(f.value, &at, &mut spec, cx)?,
            "ipam" => ipam(f.value, &at, &mut spec, cx)?,
            "labels" => spec.labels = labels::to_map(labels::parse(f.value, &at)?),
            "attachable" => {}
            "external" => {
                if !matches!(yaml::boolean(f.value, &at), Ok(false)) {
                    cx.warn(
                        &at,
                        "external networks are not supported by netd; ignored (the stack creates this network)",
                    );
                }
            }
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(&at),
        }
    }
    Ok(spec)
}

fn driver_opts(
    node: &Node,
    path: &str,
    spec: &mut NetworkSpec,
    cx: &mut Cx,
) -> Result<(), ComposeError> {
    for o in yaml::mapping(node, path)? {
        let at = key_path(path, &o.key);
        match o.key.as_str() {
            // Docker encrypts whenever the option is present; an explicit
            // false is taken at its word.
            "encrypted" => {
                let off = yaml::scalar(o.value, &at)?;
                spec.encrypted = !matches!(off.as_deref(), Some("false" | "False" | "FALSE"));
            }
            MTU_OPTION => spec.mtu = Some(yaml::number(o.value, &at, 68..=65535)?),
            VNI_OPTION => {
                let text = yaml::string(o.value, &at)?;
                if text.contains(',') {
                    return Err(fail(o.value, &at, "one VXLAN id per network"));
                }
                let vni = text
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|v| (1..1 << 24).contains(v))
                    .ok_or_else(|| fail(o.value, &at, "expected a VXLAN id from 1 to 16777215"))?;
                spec.vni = Some(vni);
            }
            _ => cx.unsupported(&at),
        }
    }
    Ok(())
}

fn ipam(node: &Node, path: &str, spec: &mut NetworkSpec, cx: &mut Cx) -> Result<(), ComposeError> {
    for f in yaml::mapping(node, path)? {
        let at = key_path(path, &f.key);
        match f.key.as_str() {
            "driver" => {
                if yaml::string(f.value, &at)? != "default" {
                    cx.warn(
                        &at,
                        "not supported by netd; ignored (netd allocates addresses)",
                    );
                }
            }
            "config" => {
                for (i, c) in yaml::sequence(f.value, &at)?.iter().enumerate() {
                    let at = index_path(&at, i);
                    if i == 0 {
                        ipam_config(c, &at, spec, cx)?;
                    } else {
                        cx.warn(&at, "a network has one subnet in netd; ignored");
                    }
                }
            }
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(&at),
        }
    }
    Ok(())
}

fn ipam_config(
    node: &Node,
    path: &str,
    spec: &mut NetworkSpec,
    cx: &mut Cx,
) -> Result<(), ComposeError> {
    let mut gateway_at = None;
    for f in yaml::mapping(node, path)? {
        let at = key_path(path, &f.key);
        match f.key.as_str() {
            "subnet" => {
                let text = yaml::string(f.value, &at)?;
                let net: Ipv4Net = text.trim().parse().map_err(|_| {
                    let why = if text.contains(':') {
                        "IPv6 subnets are not supported by netd".to_string()
                    } else {
                        format!("`{}` is not an IPv4 subnet like 10.77.0.0/24", shown(&text))
                    };
                    fail(f.value, &at, why)
                })?;
                if net != net.trunc() {
                    let why = format!("`{net}` has host bits set (did you mean {}?)", net.trunc());
                    return Err(fail(f.value, &at, why));
                }
                spec.subnet = Some(net);
            }
            "gateway" => {
                let text = yaml::string(f.value, &at)?;
                let gw: Ipv4Addr = text.trim().parse().map_err(|_| {
                    fail(
                        f.value,
                        &at,
                        format!("`{}` is not an IPv4 address", shown(&text)),
                    )
                })?;
                spec.gateway = Some(gw);
                gateway_at = Some((f.value, at));
            }
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(&at),
        }
    }
    if let (Some((node, at)), Some(gw), Some(net)) = (gateway_at, spec.gateway, spec.subnet) {
        if !net.contains(&gw) || gw == net.network() || gw == net.broadcast() {
            return Err(fail(
                node,
                &at,
                format!("{gw} is not a host address of {net}"),
            ));
        }
    }
    if spec.gateway.is_some() && spec.subnet.is_none() {
        return Err(fail(node, path, "a gateway needs a subnet"));
    }
    Ok(())
}
