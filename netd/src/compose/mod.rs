//! Compose files turned into specs, for `netd stack deploy -c FILE NAME`.
//!
//! [`parse`] reads the part of the compose format that means something to
//! netd (networks, services, their ports, replicas, endpoint mode, health
//! check, and the `shoal.*` labels that choose balancing) into
//! [`NetworkSpec`]s and [`Service`]s. Nothing else is dropped in silence:
//! every key netd does not use becomes a warning naming its path, and every
//! value it cannot honour an error with its line and column. Names stay as
//! written, with no stack prefix (a stack's objects carry the label
//! `stack=<name>` instead, see [`crate::ops::stack`]), so its services find
//! each other by the names in the file. VIPs are left to the cluster. There is no variable interpolation: `${VAR}` is kept as
//! written (and warned about).
//!
//! ```yaml
//! version: "3.8"
//! services:
//!   web:
//!     command: ["python3", "-m", "http.server", "8000"]
//!     ports: ["8080:8000"]
//!     networks: [front]
//!     healthcheck: { interval: 2s, timeout: 500ms, retries: 3 }
//!     deploy:
//!       replicas: 3
//!       labels:
//!         shoal.lb.policy: least-conn
//!         shoal.lb.mode: http
//!         shoal.health: http:/healthz
//!   cache:
//!     command: redis-server --port 6379
//!     networks: [front]
//!     deploy: { endpoint_mode: dnsrr }
//! networks:
//!   front:
//!     driver: overlay
//!     driver_opts: { encrypted: "true" }
//!     ipam: { config: [{ subnet: 10.77.0.0/24 }] }
//! ```
//!
//! # Layout
//! - `yaml`: text to positioned nodes (with the guards untrusted input
//!   needs) and typed reads that fail at a line and column.
//! - `network`: `networks.<name>`.
//! - `service`: `services.<name>` and its `deploy` block.
//! - `ports`, `labels`, `health`: the forms those blocks take.
//! - `words`: shell-like splitting of string commands, and durations.

// The YAML crate: saphyr (with saphyr-parser, its event parser). serde_yaml
// is archived upstream, and its maintained forks (serde_yaml_ng,
// serde_norway) still parse through unsafe-libyaml, a mechanical C
// translation, and through serde they report a position only for the first
// type error, not for values that are well-typed but wrong (a bad policy
// label, a udp port). saphyr is the maintained successor of yaml-rust and
// yaml-rust2 by the same authors, pure safe Rust, YAML 1.2, and its
// `MarkedYaml` keeps a span on every node, so each error here points at the
// offending node. It bounds alias expansion (billion laughs) and rejects
// duplicate keys; we add the rest that untrusted input needs on top of its
// event stream (a size cap, a nesting cap, one document), because the tree
// it builds is dropped, cloned and hashed recursively. Compose's `<<` merge
// keys are not in YAML 1.2, so `yaml` applies them.

use std::collections::BTreeSet;
use std::fmt;

use crate::model::Service;
use crate::spec::NetworkSpec;

mod health;
mod labels;
mod network;
mod ports;
mod service;
mod words;
mod yaml;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_garbage;

/// What a compose file asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stack {
    /// The networks to create: those declared, plus `default` when a
    /// service is on it (as Docker does).
    pub networks: Vec<NetworkSpec>,
    /// The services, in file order; their VIPs are left to the cluster.
    pub services: Vec<Service>,
    /// What was ignored, one line each, starting with the path
    /// (`services.web.volumes: not supported by netd; ignored`).
    pub warnings: Vec<String>,
}

/// Why a compose file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeError {
    /// The file name given to [`parse`].
    pub file: String,
    /// The line (from 1) of the offending node.
    pub line: Option<usize>,
    /// The column (from 1) of the offending node.
    pub column: Option<usize>,
    /// The path of the offending node (`services.web.ports[0]`); empty for
    /// syntax errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ComposeError {}

/// Parses a compose file; `file` names it in errors.
///
/// # Errors
/// Syntax errors, wrong types, and values netd cannot honour (a udp port,
/// an unknown policy, a reference to an undeclared network), with the
/// line and column of the offending node.
pub fn parse(file: &str, text: &str) -> Result<Stack, ComposeError> {
    parse_text(text).map_err(|mut e| {
        e.file = file.to_string();
        e
    })
}

fn parse_text(text: &str) -> Result<Stack, ComposeError> {
    let root = yaml::load(text)?;
    let mut cx = yaml::Cx::default();
    if text.contains("${") {
        cx.warn(
            "${...}",
            "variable interpolation is not supported by netd; values are used as written",
        );
    }
    let (mut networks_at, mut services_at) = (None, None);
    for e in yaml::mapping(&root, "")? {
        match e.key.as_str() {
            "version" => {}
            "networks" => networks_at = Some(e.value),
            "services" => services_at = Some(e.value),
            k if k.starts_with("x-") => {}
            k => cx.unsupported(&yaml::key_path("", k)),
        }
    }

    let mut networks = Vec::new();
    if let Some(node) = networks_at.filter(|n| !yaml::is_null(n)) {
        for e in yaml::mapping(node, "networks")? {
            networks.push(network::parse(&e, &mut cx)?);
        }
    }
    let declared: BTreeSet<&str> = networks.iter().map(|n| n.name.as_str()).collect();

    let mut services = Vec::new();
    if let Some(node) = services_at.filter(|n| !yaml::is_null(n)) {
        for e in yaml::mapping(node, "services")? {
            services.push(service::parse(&e, &declared, &mut cx)?);
        }
    }

    let uses_default = services.iter().any(|s| s.networks.contains_key("default"));
    if uses_default && !declared.contains("default") {
        networks.push(network::named("default"));
    }
    Ok(Stack {
        networks,
        services,
        warnings: cx.warnings,
    })
}
