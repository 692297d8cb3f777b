//! Health of this node's own replicas: each local endpoint of a service
//! with a check is probed from inside its network's sandbox (the service's
//! first port), with the service's interval, timeout, rise and fall. Only
//! transitions are written to the store (a compare-and-swap on the
//! endpoint's entry, keeping its lease), and every node's DNS and balancers
//! follow. Without a check (or a port) a replica is healthy as soon as it
//! starts.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use shoal_lb::health::active::check_once_with;
use shoal_lb::health::{Check, HealthSettings};
use shoal_lb::sockets::Sockets;
use tokio::task::JoinHandle;

use crate::liveness::Owned;
use crate::model::{keys, Endpoint, EndpointState, HealthCheck, Probe, Snapshot};
use crate::store::Store;

/// A running checker: what it checks, and its task.
type Checker = (HealthCheck, Option<SocketAddr>, JoinHandle<()>);

/// The checker tasks of one node, by (network, endpoint).
pub struct HealthChecks {
    store: Arc<dyn Store>,
    owned: Option<Arc<Owned>>,
    node: String,
    tasks: HashMap<(String, String), Checker>,
}

impl HealthChecks {
    /// No checks yet. States written are also noted in `owned` (when this
    /// node owns the endpoints), so re-registering keeps them.
    pub fn new(store: Arc<dyn Store>, node: &str, owned: Option<Arc<Owned>>) -> HealthChecks {
        HealthChecks {
            store,
            owned,
            node: node.to_string(),
            tasks: HashMap::new(),
        }
    }

    /// Starts, restarts or stops checkers so each local replica in `snap`
    /// has one with its service's current check. `sockets` gives the
    /// sandbox sockets of a network.
    pub fn sync(
        &mut self,
        snap: &Snapshot,
        mut sockets: impl FnMut(&str) -> Option<Arc<dyn Sockets>>,
    ) {
        let mut wanted = HashMap::new();
        for e in snap.endpoints.values().filter(|e| e.node == self.node) {
            let Some(svc) = e.service.as_ref().and_then(|s| snap.services.get(s)) else {
                continue;
            };
            let addr = svc
                .ports
                .first()
                .map(|p| SocketAddr::V4(SocketAddrV4::new(e.ip, p.target)));
            wanted.insert(
                (e.network.clone(), e.name.clone()),
                (svc.health.clone(), addr),
            );
        }
        self.tasks.retain(|k, (check, addr, task)| {
            let keep = wanted.get(k) == Some(&(check.clone(), *addr));
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (check, addr)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let Some(socks) = sockets(&key.0) else {
                continue;
            };
            let task = tokio::spawn(run(
                Arc::clone(&self.store),
                self.owned.clone(),
                self.node.clone(),
                key.clone(),
                check.clone(),
                addr,
                socks,
            ));
            self.tasks.insert(key, (check, addr, task));
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for (_, (_, _, t)) in self.tasks.drain() {
            t.abort();
        }
    }
}

/// Writes `state` into the endpoint's entry if it differs (CAS, lease
/// kept); with `only_from_starting`, only a starting replica is changed.
async fn set_state(
    store: &dyn Store,
    owned: Option<&Owned>,
    node: &str,
    key: &(String, String),
    state: EndpointState,
    only_from_starting: bool,
) {
    let k = keys::endpoint(&key.0, &key.1);
    for _ in 0..5 {
        let Ok((entries, _)) = store.range(&k).await else {
            return;
        };
        let Some(entry) = entries.into_iter().find(|e| e.key == k) else {
            return;
        };
        let Ok(mut ep) = serde_json::from_slice::<Endpoint>(&entry.value) else {
            return;
        };
        // Only this node's own entry: a replica name can move to another
        // node while this one was cut off, and a checker still running here
        // must not mark the other node's replica.
        if ep.node != node {
            return;
        }
        if ep.state == state
            || ep.state == EndpointState::Draining
            || (only_from_starting && ep.state != EndpointState::Starting)
        {
            return;
        }
        ep.state = state;
        let value = serde_json::to_vec(&ep).unwrap_or_default();
        match store
            .put_if(&k, entry.mod_revision, value, entry.lease)
            .await
        {
            Ok(true) => {
                if let Some(o) = owned {
                    o.note_state(&key.0, &key.1, state);
                }
                tracing::info!(endpoint = %key.1, network = %key.0, ?state, "replica health changed");
                return;
            }
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a replica's health now");
                return;
            }
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    owned: Option<Arc<Owned>>,
    node: String,
    key: (String, String),
    check: HealthCheck,
    addr: Option<SocketAddr>,
    sockets: Arc<dyn Sockets>,
) {
    if let (Probe::None, Some(addr)) = (&check.check, addr) {
        // No check: healthy once its port first accepts (not before its
        // process even listens), then left alone.
        let settings = HealthSettings {
            check: Check::Tcp,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
            jitter: Duration::ZERO,
        };
        while !check_once_with(sockets.as_ref(), addr, &settings).await {
            tokio::time::sleep(settings.interval).await;
        }
    }
    let Some(addr) = addr.filter(|_| check.check != Probe::None) else {
        set_state(
            store.as_ref(),
            owned.as_deref(),
            &node,
            &key,
            EndpointState::Healthy,
            true,
        )
        .await;
        return;
    };
    let settings = HealthSettings {
        check: crate::translate::lb::check(&check.check),
        interval: Duration::from_millis(check.interval_ms.max(10)),
        timeout: Duration::from_millis(check.timeout_ms.max(10)),
        rise: check.rise.max(1),
        fall: check.fall.max(1),
        jitter: Duration::from_millis(check.interval_ms / 10),
    };
    let (mut passes, mut fails) = (0u32, 0u32);
    let mut state: Option<EndpointState> = None;
    loop {
        if check_once_with(sockets.as_ref(), addr, &settings).await {
            passes += 1;
            fails = 0;
        } else {
            fails += 1;
            passes = 0;
        }
        let next = if passes >= settings.rise {
            Some(EndpointState::Healthy)
        } else if fails >= settings.fall {
            Some(EndpointState::Unhealthy)
        } else {
            None
        };
        if next.is_some() && next != state {
            state = next;
            if let Some(s) = state {
                set_state(store.as_ref(), owned.as_deref(), &node, &key, s, false).await;
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}
