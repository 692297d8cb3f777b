//! Shared fixture of netd's namespace tests: one node and one container in
//! a [`Lab`], an embedded store holding network `front` (10.77.0.0/24,
//! gateway .1) and service `web` (VIP .200, port 8000), and a small DNS
//! client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_netd::model::Node;
use shoal_netd::store::embedded::EmbeddedStore;
use shoal_netd::store::Store;
use shoal_netd::translate::Local;
use shoal_tests::{sock, Lab};

/// The gateway's DNS address.
pub const GATEWAY_DNS: &str = "10.77.0.1:53";

/// One node with container `c1` (meant for endpoint `web.1`).
pub struct OneNode {
    /// Removes the namespaces on drop; keep it alive for the test.
    pub lab: Lab,
    /// The node's (prefixed) name.
    pub node: String,
    /// The container's namespace.
    pub c1: String,
    /// The store.
    pub store: Arc<EmbeddedStore>,
}

impl OneNode {
    /// The lab and the store, with `web`'s definition (`service_json`
    /// extends it, e.g. with a health check).
    pub async fn new(service_extra: &str) -> OneNode {
        let mut lab = Lab::new();
        let node = lab.node("n1", Ipv4Addr::new(198, 18, 0, 1)).name;
        let c1 = lab.container("c1");
        let store = EmbeddedStore::ephemeral();
        store
            .put(
                "net/front",
                br#"{"name":"front","subnet":"10.77.0.0/24","gateway":"10.77.0.1","vni":4096}"#
                    .to_vec(),
                0,
            )
            .await
            .unwrap();
        let svc = format!(
            r#"{{"name":"web","networks":{{"front":"10.77.0.200"}},"ports":[{{"target":8000}}]{service_extra}}}"#
        );
        store.put("svc/web", svc.into_bytes(), 0).await.unwrap();
        OneNode {
            lab,
            node,
            c1,
            store,
        }
    }

    /// What only this node knows: its namespace and web.1's container.
    pub fn local(&self) -> Local {
        Local {
            node: self.node.clone(),
            netns: Some(self.node.clone()),
            underlay: Ipv4Addr::new(198, 18, 0, 1),
            containers: BTreeMap::from([(
                ("front".to_string(), "web.1".to_string()),
                self.c1.clone(),
            )]),
        }
    }

    /// The node's own entry, with lb address .251 in `front`.
    pub fn node_entry(&self) -> Node {
        Node {
            name: self.node.clone(),
            advertise: Ipv4Addr::new(198, 18, 0, 1),
            lb_addresses: BTreeMap::from([("front".to_string(), Ipv4Addr::new(10, 77, 0, 251))]),
        }
    }

    /// Endpoint web.1 (10.77.0.11) on this node, in `state` if given.
    pub fn web1(&self, state: Option<&str>) -> Vec<u8> {
        let state = state
            .map(|s| format!(r#","state":"{s}""#))
            .unwrap_or_default();
        format!(
            r#"{{"name":"web.1","network":"front","service":"web","node":"{}","ip":"10.77.0.11"{state}}}"#,
            self.node
        )
        .into_bytes()
    }

    /// Asks the gateway's DNS for `name` (type A) from container c1.
    pub async fn ask(&self, name: &'static str) -> (u8, Vec<Ipv4Addr>) {
        let c = self.c1.clone();
        tokio::task::spawn_blocking(move || query(&c, GATEWAY_DNS.parse().unwrap(), name))
            .await
            .unwrap()
    }
}

impl OneNode {
    /// Connects from c1 to web's VIP (port 8000) and returns the first six
    /// bytes the replica sends (`serve_echo`'s greeting).
    pub async fn greeting_via_vip(&self) -> [u8; 6] {
        use std::io::{Read, Write};
        let c = self.c1.clone();
        tokio::task::spawn_blocking(move || {
            let vip: SocketAddr = "10.77.0.200:8000".parse().unwrap();
            let mut s = sock::connect(&c, vip, None)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut b = [0u8; 6];
            s.read_exact(&mut b)?;
            s.write_all(b"x")?;
            Ok::<_, std::io::Error>(b)
        })
        .await
        .unwrap()
        .unwrap()
    }
}

/// The rcode and the A records of an answer to `name` asked from `ns`.
pub fn query(ns: &str, server: SocketAddr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    shoal_tests::dns::query_a(ns, server, name)
}
