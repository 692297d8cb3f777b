//! The agent loop in namespaces: changes written to the store reach the
//! node's DNS and datapath without anyone calling reconcile.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use shoal_netd::agent::Agent;
use shoal_netd::model::Node;
use shoal_netd::store::memory::MemoryStore;
use shoal_netd::store::Store;
use shoal_netd::translate::Local;
use shoal_tests::{sock, Lab};

/// The rcode and the A records of an answer to `name` asked from `ns`.
fn query(ns: &str, server: SocketAddr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let mut q = vec![0x43, 0x21, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let qlen = q.len();
    sock::in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(&q, server).unwrap();
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).unwrap();
        let rcode = buf[3] & 0x0f;
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        // Answers follow the question; each A record is a 2-byte name
        // pointer, type, class, TTL, length and 4 bytes of address.
        let mut ips = Vec::new();
        let mut at = qlen;
        for _ in 0..answers {
            if at + 16 > n {
                break;
            }
            ips.push(Ipv4Addr::new(
                buf[at + 12],
                buf[at + 13],
                buf[at + 14],
                buf[at + 15],
            ));
            at += 16;
        }
        (rcode, ips)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_changes_reach_dns_without_a_restart() {
    let mut lab = Lab::new();
    let node = lab.node("n1", Ipv4Addr::new(198, 18, 0, 1));
    let c1 = lab.container("c1");
    let store = MemoryStore::ephemeral();
    store
        .put(
            "net/front",
            br#"{"name":"front","subnet":"10.77.0.0/24","gateway":"10.77.0.1","vni":4096}"#
                .to_vec(),
            0,
        )
        .await
        .unwrap();
    store
        .put(
            "svc/web",
            br#"{"name":"web","networks":{"front":"10.77.0.200"},"ports":[{"target":8000}]}"#
                .to_vec(),
            0,
        )
        .await
        .unwrap();
    let local = Local {
        node: node.name.clone(),
        netns: Some(node.name.clone()),
        underlay: node.ip,
        containers: BTreeMap::from([(("front".to_string(), "web.1".to_string()), c1.clone())]),
    };
    let me = Node {
        name: node.name.clone(),
        advertise: node.ip,
        lb_addresses: BTreeMap::from([("front".to_string(), Ipv4Addr::new(10, 77, 0, 251))]),
    };
    let mut agent = Agent::start(store.clone(), me, local, Duration::from_secs(5));
    let gw: SocketAddr = "10.77.0.1:53".parse().unwrap();

    // A replica appears in the store: its container is attached, the
    // service name answers with the VIP and tasks.web with the replica.
    let ep = |state: &str| {
        format!(
            r#"{{"name":"web.1","network":"front","service":"web","node":"{}","ip":"10.77.0.11","state":"{state}"}}"#,
            node.name
        )
        .into_bytes()
    };
    let rev = store.put("ep/front/web.1", ep("healthy"), 0).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();
    let ask = |name: &'static str| {
        let c = c1.clone();
        tokio::task::spawn_blocking(move || query(&c, gw, name))
    };
    assert_eq!(
        ask("web").await.unwrap(),
        (0, vec![Ipv4Addr::new(10, 77, 0, 200)])
    );
    assert_eq!(
        ask("tasks.web").await.unwrap().1,
        vec![Ipv4Addr::new(10, 77, 0, 11)]
    );

    // It turns unhealthy: DNS stops naming it, the VIP stays.
    let rev = store
        .put("ep/front/web.1", ep("unhealthy"), 0)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();
    assert!(ask("tasks.web").await.unwrap().1.is_empty());
    assert_eq!(
        ask("web").await.unwrap().1,
        vec![Ipv4Addr::new(10, 77, 0, 200)]
    );

    // Healthy again: back, with no restart anywhere.
    let rev = store.put("ep/front/web.1", ep("healthy"), 0).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();
    assert_eq!(
        ask("tasks.web").await.unwrap().1,
        vec![Ipv4Addr::new(10, 77, 0, 11)]
    );
    // The node registered itself on its lease.
    assert!(store.range(&format!("node/{}", node.name)).await.unwrap().0[0].lease != 0);
    agent.stop().await;
}
