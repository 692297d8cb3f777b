//! Stacks: a named group of networks and services, deployed together and
//! removed together. Every object a stack makes carries the label
//! `stack=<name>`.
//!
//! A deploy checks everything before changing anything (names, specs,
//! network references, overlaps, published ports held outside the stack),
//! then creates the networks (an identical one is left as it is), then
//! applies the services. A failure after that point (a lost race, the store
//! going away) backs out what the deploy did, best effort.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ipam;
use crate::model::{Endpoint, Network, Service};
use crate::spec::NetworkSpec;
use crate::store::Store;

use super::claims::{self, published};
use super::network::{self, ensure_network, matches};
use super::service::{apply_service, list_services, remove_service};
use super::subnets::{self, check_overlap};
use super::{list_json, validate, Change, OpError};

/// The label naming the stack an object belongs to.
pub const STACK_LABEL: &str = "stack";
/// How long [`remove_stack`] waits for the stack's replicas to leave its
/// networks before it gives up on removing them.
pub const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// One object in a [`StackReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackItem {
    /// `network` or `service`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// What a deploy did, object by object, in the order it did it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackReport {
    /// The stack.
    pub stack: String,
    /// Objects made.
    pub created: Vec<StackItem>,
    /// Objects changed to match.
    pub updated: Vec<StackItem>,
    /// Objects that already matched.
    pub unchanged: Vec<StackItem>,
}

impl StackReport {
    fn add(&mut self, kind: &str, name: &str, change: Change) {
        let item = StackItem {
            kind: kind.to_string(),
            name: name.to_string(),
        };
        match change {
            Change::Created => self.created.push(item),
            Change::Updated => self.updated.push(item),
            Change::Unchanged => self.unchanged.push(item),
        }
    }
}

/// What [`remove_stack`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRemoval {
    /// The stack.
    pub stack: String,
    /// Services removed.
    pub services: Vec<String>,
    /// Networks removed.
    pub networks: Vec<String>,
}

fn in_stack(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(STACK_LABEL).map(String::as_str) == Some(stack)
}

/// Deploys stack `stack`: `networks` are created unless an identical one
/// exists, then `services` are created or updated to match. Network
/// references resolve to existing networks or to the stack's own.
/// Everything is checked first; if a check fails nothing is changed.
pub async fn deploy_stack(
    store: &dyn Store,
    stack: &str,
    mut networks: Vec<NetworkSpec>,
    mut services: Vec<Service>,
) -> Result<StackReport, OpError> {
    validate::name("stack", stack).map_err(|e| match e {
        OpError::Invalid { message, .. } => OpError::invalid("stack", message),
        other => other,
    })?;
    for n in &mut networks {
        n.labels.insert(STACK_LABEL.into(), stack.into());
    }
    for s in &mut services {
        s.labels.insert(STACK_LABEL.into(), stack.into());
    }
    let existing = check(store, stack, &networks, &services).await?;
    // Services that exist go first: they may free ports new ones take.
    services.sort_by_key(|s| !existing.contains_key(&s.name));

    let mut report = StackReport {
        stack: stack.to_string(),
        ..Default::default()
    };
    let mut undo = Undo::default();
    for spec in networks {
        let what = format!("network `{}`", spec.name);
        match ensure_network(store, spec).await {
            Ok((n, change)) => {
                report.add("network", &n.name, change);
                if change == Change::Created {
                    undo.networks.push(n.name);
                }
            }
            Err(e) => {
                undo.run(store).await;
                return Err(e.about(&what));
            }
        }
    }
    for svc in services {
        let what = format!("service `{}`", svc.name);
        let old = existing.get(&svc.name).cloned();
        match apply_service(store, svc).await {
            Ok(a) => {
                report.add("service", &a.service.name, a.change);
                match (a.change, old) {
                    (Change::Created, _) => undo.created.push(a.service.name),
                    (Change::Updated, Some(old)) => undo.updated.push(old),
                    _ => {}
                }
            }
            Err(e) => {
                undo.run(store).await;
                return Err(e.about(&what));
            }
        }
    }
    tracing::info!(
        stack,
        created = report.created.len(),
        updated = report.updated.len(),
        "deployed a stack"
    );
    Ok(report)
}

/// What a deploy did so far, to back out.
#[derive(Default)]
struct Undo {
    networks: Vec<String>,
    created: Vec<String>,
    updated: Vec<Service>,
}

impl Undo {
    async fn run(self, store: &dyn Store) {
        for old in self.updated.into_iter().rev() {
            if let Err(e) = apply_service(store, old).await {
                tracing::warn!(error = %e, "could not put back a service a failed deploy changed");
            }
        }
        for name in self.created.iter().rev() {
            if let Err(e) = remove_service(store, name).await {
                tracing::warn!(service = name, error = %e, "could not remove a service a failed deploy made");
            }
        }
        for name in self.networks.iter().rev() {
            if let Err(e) = network::remove_network(store, name).await {
                tracing::warn!(network = name, error = %e, "could not remove a network a failed deploy made");
            }
        }
    }
}

/// Checks a whole deploy against the store; returns the stack's services
/// that exist already.
async fn check(
    store: &dyn Store,
    stack: &str,
    networks: &[NetworkSpec],
    services: &[Service],
) -> Result<BTreeMap<String, Service>, OpError> {
    let nets = claims::networks(store).await?;
    // (subnet, gateway) of every network the services may name.
    let mut known: BTreeMap<&str, Option<(Ipv4Net, std::net::Ipv4Addr)>> = nets
        .values()
        .map(|n| (n.name.as_str(), Some((n.subnet, n.gateway))))
        .collect();
    let (vnis, _) = store.range("alloc/vni/").await?;
    let vni_holder = |v: u32| {
        vnis.iter()
            .find(|e| e.key == format!("alloc/vni/{v}"))
            .map(|e| String::from_utf8_lossy(&e.value).into_owned())
    };
    let mut explicit: Vec<(String, Ipv4Net)> = Vec::new();
    let mut stack_vnis = BTreeMap::new();
    let mut seen_nets = BTreeSet::new();
    for spec in networks {
        let what = format!("network `{}`", spec.name);
        validate::network_spec(spec).map_err(|e| e.about(&what))?;
        if !seen_nets.insert(&spec.name) {
            return Err(OpError::invalid(
                "networks",
                format!("{what} is listed twice"),
            ));
        }
        if let Some(have) = nets.get(&spec.name) {
            // It exists: it must match, and keeps its own subnet.
            matches(spec, have)?;
            continue;
        }
        let range = spec
            .subnet
            .map(|s| (s, spec.gateway.unwrap_or(validate::default_gateway(s))));
        known.insert(&spec.name, range);
        if let Some(s) = spec.subnet {
            check_overlap(s, &explicit).map_err(|e| e.about(&what))?;
            subnets::check_free(store, &spec.name, s)
                .await
                .map_err(|e| e.about(&what))?;
            explicit.push((spec.name.clone(), s));
        }
        if let Some(v) = spec.vni {
            let other = vni_holder(v).or_else(|| stack_vnis.get(&v).cloned());
            if let Some(other) = other.filter(|o| *o != spec.name) {
                let m = format!("VNI {v} is already used by network `{other}`");
                return Err(OpError::conflict("vni", m).about(&what));
            }
            stack_vnis.insert(v, spec.name.clone());
        }
    }

    let all: BTreeMap<String, Service> = list_services(store)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let deployed: BTreeMap<&str, &Service> =
        services.iter().map(|s| (s.name.as_str(), s)).collect();
    let holders = claims::port_holders(store).await?;
    let mut stack_ports: BTreeMap<u16, &str> = BTreeMap::new();
    let mut existing = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for svc in services {
        let what = format!("service `{}`", svc.name);
        validate::service(svc).map_err(|e| e.about(&what))?;
        if !seen.insert(&svc.name) {
            return Err(OpError::invalid(
                "services",
                format!("{what} is listed twice"),
            ));
        }
        if let Some(have) = all.get(&svc.name) {
            if !in_stack(&have.labels, stack) {
                let whose = match have.labels.get(STACK_LABEL) {
                    Some(other) => format!("in stack `{other}`"),
                    None => "outside any stack".into(),
                };
                let m = format!("{what} already exists {whose}");
                return Err(OpError::conflict("name", m));
            }
            existing.insert(svc.name.clone(), have.clone());
        }
        for (net, vip) in &svc.networks {
            let Some(range) = known.get(net.as_str()) else {
                return Err(OpError::NotFound {
                    kind: "network",
                    name: net.clone(),
                });
            };
            if let (Some(vip), Some((subnet, gw))) = (vip, range) {
                if let Some(why) = ipam::reserved(*subnet, *gw, *vip) {
                    let m =
                        format!("VIP {vip} cannot be used in network `{net}` ({subnet}): {why}");
                    return Err(OpError::invalid("networks", m).about(&what));
                }
            }
        }
        for p in published(svc) {
            if let Some(other) = stack_ports.insert(p, &svc.name) {
                let m = format!(
                    "published port {p} is asked for by both `{other}` and `{}`",
                    svc.name
                );
                return Err(OpError::conflict("ports", m));
            }
            let Some(holder) = holders.get(&p).filter(|h| **h != svc.name) else {
                continue;
            };
            // Held by another of the stack's services that gives it up?
            let freed = deployed
                .get(holder.as_str())
                .is_some_and(|h| !published(h).contains(&p));
            if !freed {
                let m = format!("published port {p} is already taken by service `{holder}`");
                return Err(OpError::conflict("ports", m).about(&what));
            }
        }
    }
    Ok(existing)
}

/// Removes stack `stack`: its services, then its networks once the
/// services' replicas have left them (waiting up to [`DRAIN_WAIT`]).
/// Refused before anything is removed if a network of the stack is used
/// by a service or an endpoint from outside it.
pub async fn remove_stack(store: &dyn Store, stack: &str) -> Result<StackRemoval, OpError> {
    let services: Vec<Service> = list_services(store)
        .await?
        .into_iter()
        .filter(|s| in_stack(&s.labels, stack))
        .collect();
    let networks: Vec<Network> = network::list_networks(store)
        .await?
        .into_iter()
        .filter(|n| in_stack(&n.labels, stack))
        .collect();
    if services.is_empty() && networks.is_empty() {
        return Err(OpError::NotFound {
            kind: "stack",
            name: stack.to_string(),
        });
    }
    let ours: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let all = list_services(store).await?;
    for net in &networks {
        let foreign = all
            .iter()
            .find(|s| s.networks.contains_key(&net.name) && !ours.contains(s.name.as_str()));
        if let Some(s) = foreign {
            let m = format!(
                "network `{}` of stack `{stack}` is used by service `{}` outside the stack",
                net.name, s.name
            );
            return Err(OpError::conflict("name", m));
        }
        let eps = list_json::<Endpoint>(store, &format!("ep/{}/", net.name)).await?;
        let stray = eps
            .iter()
            .find(|(_, e)| e.service.as_deref().is_none_or(|s| !ours.contains(s)));
        if let Some((_, e)) = stray {
            let m = format!(
                "network `{}` of stack `{stack}` has endpoint `{}` attached from outside the stack",
                net.name, e.name
            );
            return Err(OpError::conflict("name", m));
        }
    }
    let mut removed = StackRemoval {
        stack: stack.to_string(),
        ..Default::default()
    };
    for s in &services {
        match remove_service(store, &s.name).await {
            Ok(_) => removed.services.push(s.name.clone()),
            Err(OpError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    for net in &networks {
        loop {
            match network::remove_network(store, &net.name).await {
                Ok(_) => removed.networks.push(net.name.clone()),
                Err(OpError::NotFound { .. }) => {}
                Err(OpError::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(OpError::Conflict { field, message }) => {
                    let message = format!(
                        "{message} (the services of stack `{stack}` are removed; \
                         remove the stack again once their replicas have stopped)"
                    );
                    return Err(OpError::Conflict { field, message });
                }
                Err(e) => return Err(e),
            }
            break;
        }
    }
    tracing::info!(stack, "removed a stack");
    Ok(removed)
}
