//! Services: create, get, list, update, scale, apply (create or update to
//! match) and remove; the tasks (endpoints) of a service; the nodes.
//! Every change is a compare-and-swap on `svc/<name>` through
//! [`claims::commit`], retried when another writer got in first.

use serde::{Deserialize, Serialize};

use crate::model::{keys, Endpoint, Node, Service};
use crate::spec::ServiceUpdate;
use crate::store::Store;

use super::claims::{self, commit};
use super::{get_json, list_json, validate, Change, OpError};

/// A service as [`apply_service`] left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The service as stored.
    pub service: Service,
    /// What was done.
    pub change: Change,
}

fn not_found(name: &str) -> OpError {
    OpError::NotFound {
        kind: "service",
        name: name.to_string(),
    }
}

/// The first field in which `want` differs from the stored `have`, if
/// any. A VIP left `None` in `want` matches any VIP.
pub(crate) fn first_difference(want: &Service, have: &Service) -> Option<&'static str> {
    let networks_match = want.networks.len() == have.networks.len()
        && want
            .networks
            .iter()
            .all(|(n, v)| match have.networks.get(n) {
                None => false,
                Some(h) => v.is_none() || v == h,
            });
    [
        ("networks", networks_match),
        ("ports", want.ports == have.ports),
        ("endpoint_mode", want.endpoint_mode == have.endpoint_mode),
        ("policy", want.policy == have.policy),
        ("health", want.health == have.health),
        ("client_address", want.client_address == have.client_address),
        ("replicas", want.replicas == have.replicas),
        ("command", want.command == have.command),
        ("labels", want.labels == have.labels),
    ]
    .into_iter()
    .find(|(_, same)| !same)
    .map(|(field, _)| field)
}

/// Creates `svc`: checks it, claims its published ports and its VIPs
/// (allocating those left `None` in vip mode), then writes it. A service of
/// that name that already matches is returned unchanged; one that differs
/// is a conflict naming the field (changes go through
/// [`update_service`] or [`apply_service`]).
pub async fn create_service(store: &dyn Store, svc: Service) -> Result<Service, OpError> {
    validate::service(&svc)?;
    loop {
        match get_json::<Service>(store, &keys::service(&svc.name)).await? {
            Some(cur) => {
                return match first_difference(&svc, &cur.value) {
                    None => Ok(cur.value),
                    Some(field) => Err(OpError::conflict(
                        field,
                        format!(
                            "service `{}` already exists with other {field}; update it instead",
                            svc.name
                        ),
                    )),
                }
            }
            None => {
                if let Some(s) = commit(store, None, svc.clone()).await? {
                    tracing::info!(service = %s.name, "created a service");
                    return Ok(s);
                }
            }
        }
    }
}

/// Creates `svc`, or changes the stored service to match it (VIPs left
/// `None` keep the ones it has).
pub async fn apply_service(store: &dyn Store, svc: Service) -> Result<Applied, OpError> {
    validate::service(&svc)?;
    loop {
        let cur = get_json::<Service>(store, &keys::service(&svc.name)).await?;
        let change = match &cur {
            None => Change::Created,
            Some(c) if first_difference(&svc, &c.value).is_none() => {
                return Ok(Applied {
                    service: c.value.clone(),
                    change: Change::Unchanged,
                })
            }
            Some(_) => Change::Updated,
        };
        if let Some(service) = commit(store, cur.as_ref(), svc.clone()).await? {
            return Ok(Applied { service, change });
        }
    }
}

/// The service `name`.
pub async fn get_service(store: &dyn Store, name: &str) -> Result<Service, OpError> {
    get_json::<Service>(store, &keys::service(name))
        .await?
        .map(|s| s.value)
        .ok_or_else(|| not_found(name))
}

/// Every service, by name.
pub async fn list_services(store: &dyn Store) -> Result<Vec<Service>, OpError> {
    Ok(list_json::<Service>(store, "svc/")
        .await?
        .into_iter()
        .filter(|(k, s)| *k == keys::service(&s.name))
        .map(|(_, s)| s)
        .collect())
}

/// `svc` with `upd` applied. Switching to dnsrr drops the VIPs; switching
/// to vip leaves them to be allocated.
fn updated(mut svc: Service, upd: &ServiceUpdate) -> Service {
    if let Some(p) = &upd.ports {
        svc.ports = p.clone();
    }
    if let Some(p) = upd.policy {
        svc.policy = p;
    }
    if let Some(h) = &upd.health {
        svc.health = h.clone();
    }
    if let Some(c) = upd.client_address {
        svc.client_address = c;
    }
    if let Some(m) = upd.endpoint_mode {
        if m != svc.endpoint_mode {
            svc.endpoint_mode = m;
            svc.networks.values_mut().for_each(|v| *v = None);
        }
    }
    if let Some(r) = upd.replicas {
        svc.replicas = r;
    }
    if let Some(c) = &upd.command {
        svc.command = c.clone();
    }
    if let Some(l) = &upd.labels {
        svc.labels = l.clone();
    }
    svc
}

/// Changes service `name` by `upd`: a compare-and-swap on its current
/// value, retried when another writer got in first. Ports and VIPs it
/// gains are claimed before the write and those it drops released after;
/// an error leaves the service and every claim as they were.
pub async fn update_service(
    store: &dyn Store,
    name: &str,
    upd: ServiceUpdate,
) -> Result<Service, OpError> {
    loop {
        let cur = get_json::<Service>(store, &keys::service(name))
            .await?
            .ok_or_else(|| not_found(name))?;
        let want = updated(cur.value.clone(), &upd);
        if want == cur.value {
            return Ok(cur.value);
        }
        if let Some(s) = commit(store, Some(&cur), want).await? {
            tracing::info!(service = name, "updated a service");
            return Ok(s);
        }
    }
}

/// Sets the replica count of service `name` (above 0 needs a command).
pub async fn scale_service(
    store: &dyn Store,
    name: &str,
    replicas: u32,
) -> Result<Service, OpError> {
    let upd = ServiceUpdate {
        replicas: Some(replicas),
        ..Default::default()
    };
    update_service(store, name, upd).await
}

/// Removes service `name` and releases its published ports and VIPs.
/// Returns the service removed.
pub async fn remove_service(store: &dyn Store, name: &str) -> Result<Service, OpError> {
    let key = keys::service(name);
    loop {
        let cur = get_json::<Service>(store, &key)
            .await?
            .ok_or_else(|| not_found(name))?;
        if store.delete_if(&key, cur.rev).await? {
            claims::release_service(store, &cur.value).await?;
            tracing::info!(service = name, "removed a service");
            return Ok(cur.value);
        }
    }
}

/// The endpoints (tasks) of service `name` across its networks, by name.
pub async fn service_tasks(store: &dyn Store, name: &str) -> Result<Vec<Endpoint>, OpError> {
    let svc = get_service(store, name).await?;
    let mut tasks: Vec<Endpoint> = list_json::<Endpoint>(store, "ep/")
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.service.as_deref() == Some(svc.name.as_str()))
        .collect();
    tasks.sort_by(|a, b| (&a.name, &a.network).cmp(&(&b.name, &b.network)));
    Ok(tasks)
}

/// The live nodes, by name.
pub async fn list_nodes(store: &dyn Store) -> Result<Vec<Node>, OpError> {
    Ok(list_json::<Node>(store, "node/")
        .await?
        .into_iter()
        .filter(|(k, n)| *k == keys::node(&n.name))
        .map(|(_, n)| n)
        .collect())
}
