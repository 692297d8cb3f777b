//! The cluster model: networks, services, nodes and endpoints as they are
//! stored (JSON values under the keys below), and a [`Snapshot`] of all of
//! them at one store revision, which reconcile turns into the inputs of
//! `shoal-overlay`, `shoal-dns` and `shoal-lb`.
//!
//! Keys:
//! - `net/<name>`: a [`Network`];
//! - `svc/<name>`: a [`Service`];
//! - `node/<name>`: a [`Node`] (on the node's lease);
//! - `ep/<network>/<name>`: an [`Endpoint`] (on its node's lease).
//!
//! - `schema`: the schema version of all of the above ([`SCHEMA`]).
//!
//! Values that do not decode (written by a newer or broken client) are
//! skipped with a warning; they never stop a node.
//!
//! The stored shapes are netd's own: nothing here derives its JSON from
//! another crate's types (the balancing choices are [`choices`]), so only a
//! change in this module changes what every node reads.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::store::{Entry, Revision};

pub mod choices;

pub use choices::{Policy, Probe};

/// The version of the stored shapes this netd writes and reads. A store
/// marked with a higher one was written by a newer netd: an agent refuses
/// to start on it rather than misread it.
pub const SCHEMA: u32 = 1;

/// Names of networks, services, nodes and endpoints: `[A-Za-z0-9_.-]`,
/// 1 to 63 characters, not starting with `.` or `-`.
pub fn valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// An overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// The gateway, on every node's bridge; the network's DNS listens here.
    pub gateway: Ipv4Addr,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// VXLAN over the WireGuard mesh.
    #[serde(default)]
    pub encrypted: bool,
    /// A fixed MTU instead of the one derived from the underlay.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Free-form labels (`stack` names the stack that made it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How a service is reached by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// The name is a VIP balanced by every node's proxy.
    #[default]
    Vip,
    /// The name returns the healthy task IPs (DNS round-robin).
    Dnsrr,
}

/// How the client's address reaches the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddress {
    /// Not passed on.
    #[default]
    None,
    /// A PROXY v2 header on each connection.
    ProxyV2,
    /// `X-Forwarded-For` and `Forwarded` (HTTP ports only).
    Forwarded,
}

/// What a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Bytes, balanced per connection.
    #[default]
    Tcp,
    /// HTTP, balanced per request.
    Http,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// A name for SRV records (`_<name>._tcp.<service>`).
    #[serde(default)]
    pub name: Option<String>,
    /// The port the replicas listen on (and the VIP serves).
    pub target: u16,
    /// The port published on every node's host address (the routing mesh).
    #[serde(default)]
    pub published: Option<u16>,
    /// TCP or HTTP balancing.
    #[serde(default)]
    pub mode: PortMode,
}

/// A service's health check of its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp` or `http:/path` (or `none`).
    pub check: Probe,
    /// Milliseconds between checks.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Milliseconds before a check fails.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Passes that make a replica healthy.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failures that make it unhealthy.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_rise() -> u32 {
    1
}
fn default_fall() -> u32 {
    2
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            check: Probe::None,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

/// A service: a name, ports and a policy over its replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its name (also its DNS name).
    pub name: String,
    /// The networks it is on, with its VIP in each (vip mode).
    pub networks: BTreeMap<String, Option<Ipv4Addr>>,
    /// Its ports.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// VIP or DNS round-robin.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// The balancing policy.
    #[serde(default = "default_policy")]
    pub policy: Policy,
    /// The health check of its replicas.
    #[serde(default)]
    pub health: HealthCheck,
    /// How the client address reaches replicas.
    #[serde(default)]
    pub client_address: ClientAddress,
    /// How many replicas netd runs itself (spread over the nodes), each
    /// running `command`. 0: replicas come only from `netd run`.
    #[serde(default)]
    pub replicas: u32,
    /// The command each netd-run replica executes (argv), in its own
    /// container namespace attached to the service's networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Free-form labels (`stack` names the stack that made it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_policy() -> Policy {
    Policy::RoundRobin
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its underlay address (VTEP, published ports).
    pub advertise: Ipv4Addr,
    /// Its own lb address in each network.
    #[serde(default)]
    pub lb_addresses: BTreeMap<String, Ipv4Addr>,
}

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Started, not yet checked.
    #[default]
    Starting,
    /// Passing its checks: takes traffic and is in DNS.
    Healthy,
    /// Failing its checks.
    Unhealthy,
    /// Stopping: no new traffic, open connections finish.
    Draining,
}

/// A container attached to a network: a replica of a service, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Its name (the task name in DNS).
    pub name: String,
    /// The network.
    pub network: String,
    /// The service it is a replica of.
    #[serde(default)]
    pub service: Option<String>,
    /// The node it runs on.
    pub node: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its weight in balancing (0 drains).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Its state.
    #[serde(default)]
    pub state: EndpointState,
}

fn default_weight() -> u32 {
    1
}

impl Endpoint {
    /// Whether it takes new traffic and appears in DNS.
    pub fn serving(&self) -> bool {
        self.state == EndpointState::Healthy && self.weight > 0
    }
}

/// The key of each kind.
pub mod keys {
    /// The schema version of the store.
    pub const SCHEMA: &str = "schema";
    /// `net/<name>`.
    pub fn network(name: &str) -> String {
        format!("net/{name}")
    }
    /// `svc/<name>`.
    pub fn service(name: &str) -> String {
        format!("svc/{name}")
    }
    /// `node/<name>`.
    pub fn node(name: &str) -> String {
        format!("node/{name}")
    }
    /// `ep/<network>/<name>`.
    pub fn endpoint(network: &str, name: &str) -> String {
        format!("ep/{network}/{name}")
    }
    /// `ack/<network>/<endpoint>/`: the nodes that stopped sending new
    /// traffic to a draining endpoint.
    pub fn acks(network: &str, endpoint: &str) -> String {
        format!("ack/{network}/{endpoint}/")
    }
    /// `ack/<network>/<endpoint>/<node>`.
    pub fn ack(network: &str, endpoint: &str, node: &str) -> String {
        format!("ack/{network}/{endpoint}/{node}")
    }
}

/// Everything at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The store revision it was read at.
    pub revision: Revision,
    /// Networks by name.
    pub networks: BTreeMap<String, Network>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Live nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Endpoints by (network, name).
    pub endpoints: BTreeMap<(String, String), Endpoint>,
}

fn decode<T: for<'de> Deserialize<'de>>(e: &Entry) -> Option<T> {
    match serde_json::from_slice(&e.value) {
        Ok(v) => Some(v),
        Err(err) => {
            tracing::warn!(key = %e.key, error = %err, "skipping a value that does not decode");
            None
        }
    }
}

impl Snapshot {
    /// Builds a snapshot from all entries read at `revision`.
    pub fn from_entries(entries: &[Entry], revision: Revision) -> Snapshot {
        let mut s = Snapshot {
            revision,
            ..Default::default()
        };
        for e in entries {
            s.apply_put(e);
        }
        s
    }

    /// Folds in one put.
    pub fn apply_put(&mut self, e: &Entry) {
        let Some((kind, rest)) = e.key.split_once('/') else {
            return;
        };
        match kind {
            "net" => {
                if let Some(n) = decode::<Network>(e).filter(|n| n.name == rest) {
                    self.networks.insert(n.name.clone(), n);
                }
            }
            "svc" => {
                if let Some(v) = decode::<Service>(e).filter(|v| v.name == rest) {
                    self.services.insert(v.name.clone(), v);
                }
            }
            "node" => {
                if let Some(n) = decode::<Node>(e).filter(|n| n.name == rest) {
                    self.nodes.insert(n.name.clone(), n);
                }
            }
            "ep" => {
                if let Some(p) =
                    decode::<Endpoint>(e).filter(|p| rest == format!("{}/{}", p.network, p.name))
                {
                    self.endpoints
                        .insert((p.network.clone(), p.name.clone()), p);
                }
            }
            _ => {}
        }
        self.revision = self.revision.max(e.mod_revision);
    }

    /// Folds in one delete.
    pub fn apply_delete(&mut self, key: &str, revision: Revision) {
        if let Some((kind, rest)) = key.split_once('/') {
            match kind {
                "net" => {
                    self.networks.remove(rest);
                }
                "svc" => {
                    self.services.remove(rest);
                }
                "node" => {
                    self.nodes.remove(rest);
                }
                "ep" => {
                    if let Some((net, name)) = rest.split_once('/') {
                        self.endpoints.remove(&(net.to_string(), name.to_string()));
                    }
                }
                _ => {}
            }
        }
        self.revision = self.revision.max(revision);
    }

    /// The endpoints of `service` in `network`.
    pub fn replicas<'a>(
        &'a self,
        service: &'a str,
        network: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .values()
            .filter(move |e| e.network == network && e.service.as_deref() == Some(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records saved from the store of the netd before the stored shapes
    /// were netd's own (they embedded shoal-lb's types) read back, and
    /// write back the same JSON.
    #[test]
    fn records_of_the_saved_store_read_and_write_back_unchanged() {
        let saved: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/store-json-v0.json")).unwrap();
        let mut seen = 0;
        for e in saved["entries"].as_array().unwrap() {
            let key = e["key"].as_str().unwrap();
            let bytes: Vec<u8> = e["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            let original: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) => continue, // a plain-text claim, not a record
            };
            let again = match key.split('/').next().unwrap() {
                "svc" => serde_json::to_value(serde_json::from_slice::<Service>(&bytes).unwrap()),
                "net" => serde_json::to_value(serde_json::from_slice::<Network>(&bytes).unwrap()),
                "node" => serde_json::to_value(serde_json::from_slice::<Node>(&bytes).unwrap()),
                _ => continue,
            }
            .unwrap();
            assert_eq!(again, original, "{key}");
            seen += 1;
        }
        assert!(seen >= 5, "the fixture's records: {seen}");
    }

    fn entry(key: &str, value: &str, rev: Revision) -> Entry {
        Entry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: rev,
            lease: 0,
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("web.1") && valid_name("front_end-2"));
        assert!(
            !valid_name("")
                && !valid_name(".x")
                && !valid_name("a/b")
                && !valid_name(&"a".repeat(64))
        );
    }

    #[test]
    fn snapshots_fold_puts_and_deletes_and_skip_garbage() {
        let entries = [
            entry(
                "net/front",
                r#"{"name":"front","subnet":"10.77.0.0/24","gateway":"10.77.0.1","vni":4096}"#,
                1,
            ),
            entry(
                "svc/web",
                r#"{"name":"web","networks":{"front":"10.77.0.200"},"ports":[{"target":8000,"published":8080}],"policy":"least-conn","health":{"check":"tcp"}}"#,
                2,
            ),
            entry("node/n1", r#"{"name":"n1","advertise":"198.18.0.1"}"#, 3),
            entry(
                "ep/front/web.1",
                r#"{"name":"web.1","network":"front","service":"web","node":"n1","ip":"10.77.0.11","state":"healthy"}"#,
                4,
            ),
            entry(
                "ep/front/web.2",
                r#"{"name":"web.2","network":"front","service":"web","node":"n1","ip":"10.77.0.12"}"#,
                5,
            ),
            entry("svc/bad", "{not json", 6),
            entry("svc/liar", r#"{"name":"other","networks":{}}"#, 7),
            entry("weird", "x", 8),
        ];
        let mut s = Snapshot::from_entries(&entries, 8);
        assert_eq!(s.networks["front"].vni, 4096);
        let web = &s.services["web"];
        assert_eq!(web.policy, Policy::LeastConn);
        assert_eq!(web.health.check, Probe::Tcp);
        assert_eq!(web.health.fall, 2);
        assert_eq!(
            s.services.len(),
            1,
            "garbage and mismatched keys are skipped"
        );
        let serving: Vec<_> = s
            .replicas("web", "front")
            .filter(|e| e.serving())
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(serving, ["web.1"]);
        s.apply_delete("ep/front/web.1", 9);
        assert_eq!(s.replicas("web", "front").count(), 1);
        assert_eq!(s.revision, 9);
    }
}
