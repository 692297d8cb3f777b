//! The cluster model turned into each room's plain inputs, for one node:
//! the overlay's desired state ([`overlay`]), the DNS record set ([`dns`])
//! and the balancer's listeners ([`lb`]). Pure functions of a
//! [`Snapshot`](crate::model::Snapshot): the same snapshot gives the same
//! inputs whether netd ran all along or just restarted, which is what makes
//! reconcile level-triggered.

pub mod dns;
pub mod lb;
pub mod overlay;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What only this node knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The node's name.
    pub node: String,
    /// The namespace playing the node (None = netd's own).
    pub netns: Option<String>,
    /// Its underlay address.
    pub underlay: Ipv4Addr,
    /// The namespace of each local container, by (network, endpoint name).
    pub containers: BTreeMap<(String, String), String>,
}

#[cfg(test)]
pub(crate) mod tests {
    //! One snapshot for every translation's tests.
    use super::*;
    use crate::model::Snapshot;
    use crate::store::Entry;

    /// A front network; web (vip, least-conn, published 8080, PROXY v2) and
    /// api (dnsrr); nodes n1 and n2; replicas on n1, n2 and a gone n3.
    pub(crate) fn snapshot() -> Snapshot {
        let kv = [
            (
                "net/front",
                r#"{"name":"front","subnet":"10.77.0.0/24","gateway":"10.77.0.1","vni":4096}"#,
            ),
            (
                "svc/web",
                r#"{"name":"web","networks":{"front":"10.77.0.200"},"ports":[{"name":"http","target":8000,"published":8080}],"policy":"least-conn","health":{"check":"tcp"},"client_address":"proxy-v2"}"#,
            ),
            (
                "svc/api",
                r#"{"name":"api","networks":{"front":null},"ports":[{"target":9000}],"endpoint_mode":"dnsrr"}"#,
            ),
            (
                "node/n1",
                r#"{"name":"n1","advertise":"198.18.0.1","lb_addresses":{"front":"10.77.0.251"}}"#,
            ),
            (
                "node/n2",
                r#"{"name":"n2","advertise":"198.18.0.2","lb_addresses":{"front":"10.77.0.252"}}"#,
            ),
            (
                "ep/front/web.1",
                r#"{"name":"web.1","network":"front","service":"web","node":"n1","ip":"10.77.0.11","state":"healthy"}"#,
            ),
            (
                "ep/front/web.2",
                r#"{"name":"web.2","network":"front","service":"web","node":"n2","ip":"10.77.0.12","weight":2,"state":"healthy"}"#,
            ),
            (
                "ep/front/web.3",
                r#"{"name":"web.3","network":"front","service":"web","node":"n3","ip":"10.77.0.13","state":"healthy"}"#,
            ),
            (
                "ep/front/web.4",
                r#"{"name":"web.4","network":"front","service":"web","node":"n1","ip":"10.77.0.14","state":"unhealthy"}"#,
            ),
            (
                "ep/front/api.1",
                r#"{"name":"api.1","network":"front","service":"api","node":"n2","ip":"10.77.0.21","state":"healthy"}"#,
            ),
            (
                "ep/front/api.2",
                r#"{"name":"api.2","network":"front","service":"api","node":"n1","ip":"10.77.0.22","state":"draining"}"#,
            ),
        ];
        let entries: Vec<Entry> = kv
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Entry {
                key: k.to_string(),
                value: v.as_bytes().to_vec(),
                mod_revision: i as i64 + 1,
                lease: 0,
            })
            .collect();
        Snapshot::from_entries(&entries, entries.len() as i64)
    }

    /// Node `name` of that snapshot, knowing the namespaces of web.1 and api.2.
    pub(crate) fn local(name: &str) -> Local {
        Local {
            node: name.into(),
            netns: None,
            underlay: if name == "n1" {
                "198.18.0.1"
            } else {
                "198.18.0.2"
            }
            .parse()
            .unwrap(),
            containers: [
                (
                    ("front".to_string(), "web.1".to_string()),
                    "c-web1".to_string(),
                ),
                (
                    ("front".to_string(), "api.2".to_string()),
                    "c-api2".to_string(),
                ),
            ]
            .into(),
        }
    }
}
