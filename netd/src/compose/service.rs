//! `services.<name>`: a service spec, with its `deploy` block.

use std::collections::{BTreeMap, BTreeSet};

use super::labels::{self, Shoal};
use super::network::bad_name;
use super::yaml::{self, fail, index_path, key_path, shown, Cx, Entry, Node};
use super::{health, ports, words, ComposeError};
use crate::model::{ClientAddress, EndpointMode, HealthCheck, PortMode, Service};

/// The network a service without `networks` is on.
const DEFAULT_NETWORK: &str = "default";

/// Reads one entry of `services`; `declared` are the top-level networks.
pub(super) fn parse(
    e: &Entry,
    declared: &BTreeSet<&str>,
    cx: &mut Cx,
) -> Result<Service, ComposeError> {
    let path = key_path("services", &e.key);
    if !crate::model::valid_name(&e.key) {
        return Err(fail(e.key_node, &path, bad_name(&e.key)));
    }
    let mut service = Service {
        name: e.key.clone(),
        networks: BTreeMap::new(),
        ports: Vec::new(),
        endpoint_mode: EndpointMode::Vip,
        policy: crate::model::Policy::RoundRobin,
        health: HealthCheck::default(),
        client_address: ClientAddress::None,
        replicas: 0,
        command: Vec::new(),
        labels: BTreeMap::new(),
    };
    let (mut command, mut entrypoint) = (None, None);
    let (mut networks, mut port_list, mut deploy, mut healthcheck) = (None, None, None, None);
    for f in yaml::mapping(e.value, &path)? {
        let at = key_path(&path, &f.key);
        match f.key.as_str() {
            "command" => command = Some(argv(f.value, &at)?),
            "entrypoint" => entrypoint = Some(argv(f.value, &at)?),
            "image" => cx.warn(
                &at,
                "image is not pulled; netd runs `command` on the host filesystem",
            ),
            "networks" => networks = Some((f.value, at)),
            "ports" => port_list = Some((f.value, at)),
            "deploy" => deploy = Some((f.value, at)),
            "healthcheck" => healthcheck = Some((f.value, at)),
            "labels" => cx.warn(
                &at,
                "container labels are not supported by netd; ignored \
                 (service labels, shoal.* included, go under deploy.labels)",
            ),
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(&at),
        }
    }
    service.command = entrypoint.into_iter().chain(command).flatten().collect();

    let mut replicas = None;
    let mut labels = Vec::new();
    if let Some((node, at)) = &deploy {
        for f in yaml::mapping(node, at)? {
            let at = key_path(at, &f.key);
            match f.key.as_str() {
                "replicas" => replicas = Some((yaml::number(f.value, &at, 0..=u32::MAX)?, at)),
                "endpoint_mode" => {
                    service.endpoint_mode = match yaml::string(f.value, &at)?.as_str() {
                        "vip" => EndpointMode::Vip,
                        "dnsrr" => EndpointMode::Dnsrr,
                        m => {
                            let why = format!(
                                "unknown endpoint mode `{}` (expected vip or dnsrr)",
                                shown(m)
                            );
                            return Err(fail(f.value, &at, why));
                        }
                    }
                }
                "labels" => labels = labels::parse(f.value, &at)?,
                "mode" => {
                    let mode = yaml::string(f.value, &at)?;
                    if mode != "replicated" {
                        let why = format!(
                            "`{}` is not supported by netd; the service is replicated",
                            shown(&mode)
                        );
                        cx.warn(&at, why);
                    }
                }
                k if k.starts_with("x-") => {}
                _ => cx.unsupported(&at),
            }
        }
    }
    let shoal = labels::take_shoal(&mut labels, cx)?;
    service.labels = labels::to_map(labels);

    service.replicas = match replicas {
        Some((n, at)) if n > 0 && service.command.is_empty() => {
            cx.warn(
                &at,
                "no `command` to run, so netd runs no replicas itself (attach them with `netd run`)",
            );
            0
        }
        Some((n, _)) => n,
        None => u32::from(!service.command.is_empty()),
    };

    service.networks = match &networks {
        Some((node, at)) => service_networks(node, at, declared, cx)?,
        None => BTreeMap::from([(DEFAULT_NETWORK.to_string(), None)]),
    };

    if let Some((node, at)) = &port_list {
        for p in ports::parse(node, at, cx)? {
            let mut port = p.port;
            if !p.mode_written {
                port.mode = shoal.mode.unwrap_or(PortMode::Tcp);
            }
            service.ports.push(port);
        }
    }

    apply(&mut service, shoal, healthcheck, &path, cx)?;
    Ok(service)
}

/// Applies what the labels and the health block chose.
fn apply(
    service: &mut Service,
    shoal: Shoal,
    healthcheck: Option<(&Node, String)>,
    path: &str,
    cx: &mut Cx,
) -> Result<(), ComposeError> {
    if let Some(policy) = shoal.policy {
        service.policy = policy;
    }
    if let Some(client) = shoal.client_address {
        service.client_address = client;
        let http = service.ports.iter().any(|p| p.mode == PortMode::Http);
        if client == ClientAddress::Forwarded && !http {
            cx.warn(
                &key_path(&key_path(path, "deploy"), "labels"),
                "shoal.lb.client-address=forwarded adds headers to HTTP ports only, and this service has none",
            );
        }
    }
    service.health = match healthcheck {
        Some((node, at)) => health::parse(node, &at, shoal.health, cx)?,
        None => HealthCheck {
            check: shoal.health.unwrap_or(crate::model::Probe::None),
            ..HealthCheck::default()
        },
    };
    Ok(())
}

/// A command: a list as is, or a string split like a shell would.
fn argv(node: &Node, path: &str) -> Result<Vec<String>, ComposeError> {
    if let saphyr::YamlData::Sequence(items) = &node.data {
        let words = items.iter().enumerate();
        return words
            .map(|(i, item)| yaml::string(item, &index_path(path, i)))
            .collect();
    }
    match yaml::scalar(node, path)? {
        None => Ok(Vec::new()),
        Some(line) => words::split(&line).map_err(|why| fail(node, path, why)),
    }
}

/// `networks` of a service: a list of names, or a mapping from names to
/// (ignored) settings. Each must be declared, except `default`.
fn service_networks(
    node: &Node,
    path: &str,
    declared: &BTreeSet<&str>,
    cx: &mut Cx,
) -> Result<BTreeMap<String, Option<std::net::Ipv4Addr>>, ComposeError> {
    let mut names: Vec<(String, &Node, String)> = Vec::new();
    if let saphyr::YamlData::Sequence(items) = &node.data {
        for (i, item) in items.iter().enumerate() {
            let at = index_path(path, i);
            names.push((yaml::string(item, &at)?, item, at));
        }
    } else {
        for e in yaml::mapping(node, path)? {
            let at = key_path(path, &e.key);
            for f in yaml::mapping(e.value, &at)? {
                if !f.key.starts_with("x-") {
                    cx.unsupported(&key_path(&at, &f.key));
                }
            }
            names.push((e.key, e.key_node, at));
        }
    }
    if names.is_empty() {
        cx.warn(path, "the service is on no network: nothing can reach it");
    }
    let mut out = BTreeMap::new();
    for (name, node, at) in names {
        if name != DEFAULT_NETWORK && !declared.contains(name.as_str()) {
            let why = format!(
                "network `{}` is not declared under the top-level `networks`",
                shown(&name)
            );
            return Err(fail(node, &at, why));
        }
        out.insert(name, None);
    }
    Ok(out)
}
