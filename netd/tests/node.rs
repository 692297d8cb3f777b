//! One node reconciled from the store, end to end in namespaces: the
//! container resolves the service by name at its network's gateway and
//! reaches a replica through the VIP, balanced by the node's proxy inside
//! the sandbox.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use shoal_netd::model::Snapshot;
use shoal_netd::node::NodeRuntime;
use shoal_netd::store::memory::MemoryStore;
use shoal_netd::store::Store;
use shoal_netd::translate::Local;
use shoal_tests::{sock, Lab};

/// A DNS query for `name` type A; returns the first A record's address.
fn resolve(ns: &str, server: SocketAddr, name: &str) -> Option<Ipv4Addr> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let ns = ns.to_string();
    sock::in_netns(&ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.send_to(&q, server).ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        // The answer's RDATA ends the message for a single A record.
        (answers >= 1 && n >= 4)
            .then(|| Ipv4Addr::new(buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reaches_its_service_by_name_and_vip() {
    let mut lab = Lab::new();
    let node = lab.node("n1", Ipv4Addr::new(198, 18, 0, 1));
    let c1 = lab.container("c1");
    let store = MemoryStore::ephemeral();
    let put = |k: &'static str, v: String| {
        let store = store.clone();
        async move { store.put(k, v.into_bytes(), 0).await.unwrap() }
    };
    put(
        "net/front",
        r#"{"name":"front","subnet":"10.77.0.0/24","gateway":"10.77.0.1","vni":4096}"#.into(),
    )
    .await;
    put(
        "svc/web",
        r#"{"name":"web","networks":{"front":"10.77.0.200"},"ports":[{"target":8000}]}"#.into(),
    )
    .await;
    put("ep/front/web.1", format!(r#"{{"name":"web.1","network":"front","service":"web","node":"{}","ip":"10.77.0.11","state":"healthy"}}"#, node.name)).await;
    // The node's key carries the lab's (prefixed) node name.
    let node_json = format!(
        r#"{{"name":"{}","advertise":"198.18.0.1","lb_addresses":{{"front":"10.77.0.251"}}}}"#,
        node.name
    );
    store
        .put(&format!("node/{}", node.name), node_json.into_bytes(), 0)
        .await
        .unwrap();
    let (entries, rev) = store.range("").await.unwrap();
    let snap = Snapshot::from_entries(&entries, rev);
    let local = Local {
        node: node.name.clone(),
        netns: Some(node.name.clone()),
        underlay: node.ip,
        containers: BTreeMap::from([(("front".to_string(), "web.1".to_string()), c1.clone())]),
    };
    let mut rt = NodeRuntime::new(local);
    rt.reconcile(&snap).await.unwrap();

    // The replica serves inside its container, on its overlay address.
    let replica = sock::listen(&c1, "10.77.0.11:8000".parse().unwrap());
    let _server = sock::serve_echo(replica, "web.1\n");

    // DNS at the gateway answers the service name with its VIP.
    let gw: SocketAddr = "10.77.0.1:53".parse().unwrap();
    let c = c1.clone();
    let vip = tokio::task::spawn_blocking(move || resolve(&c, gw, "web"))
        .await
        .unwrap();
    assert_eq!(vip, Some(Ipv4Addr::new(10, 77, 0, 200)));

    // The VIP is balanced by the node's proxy to the replica.
    let c = c1.clone();
    let greeting = tokio::task::spawn_blocking(move || {
        let mut s = sock::connect(&c, "10.77.0.200:8000".parse().unwrap(), None)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [0u8; 6];
        s.read_exact(&mut b)?;
        s.write_all(b"ping")?;
        Ok::<_, std::io::Error>(b)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&greeting, b"web.1\n");

    // Reconciling the same snapshot again changes nothing and keeps serving.
    rt.reconcile(&snap).await.unwrap();
    let c = c1.clone();
    let again = tokio::task::spawn_blocking(move || resolve(&c, gw, "web.shoal"))
        .await
        .unwrap();
    assert_eq!(again, Some(Ipv4Addr::new(10, 77, 0, 200)));
    drop(rt);
}
