//! Tests of the operations against the embedded store: the semantics the
//! API relies on (messages, idempotence, races, and that a failed
//! operation leaves nothing behind).

use std::collections::BTreeMap;

use crate::model::Policy;

use crate::model::{Port, PortMode, Service};
use crate::spec::NetworkSpec;
use crate::store::Store;

mod network;
mod service;
mod stack;

/// A network spec with only a name and maybe a subnet.
fn net(name: &str, subnet: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        gateway: None,
        vni: None,
        encrypted: false,
        mtu: None,
        labels: BTreeMap::new(),
    }
}

/// A vip-mode service on `networks` publishing `published` (target =
/// published + 1000).
fn svc(name: &str, networks: &[&str], published: &[u16]) -> Service {
    Service {
        name: name.into(),
        networks: networks.iter().map(|n| (n.to_string(), None)).collect(),
        ports: published
            .iter()
            .map(|p| Port {
                name: None,
                target: p + 1000,
                published: Some(*p),
                mode: PortMode::Tcp,
            })
            .collect(),
        endpoint_mode: Default::default(),
        policy: Policy::RoundRobin,
        health: Default::default(),
        client_address: Default::default(),
        replicas: 0,
        command: Vec::new(),
        labels: BTreeMap::new(),
    }
}

/// The keys under `prefix`.
async fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    let (entries, _) = store.range(prefix).await.unwrap();
    entries.into_iter().map(|e| e.key).collect()
}

/// The value at `key`, as text.
async fn value(store: &dyn Store, key: &str) -> Option<String> {
    let (entries, _) = store.range(key).await.unwrap();
    entries
        .into_iter()
        .find(|e| e.key == key)
        .map(|e| String::from_utf8(e.value).unwrap())
}
