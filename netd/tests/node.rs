//! One node reconciled from the store, end to end in namespaces: the
//! container resolves the service by name at its network's gateway and
//! reaches a replica through the VIP, balanced by the node's proxy inside
//! the sandbox.

mod common;

use std::net::Ipv4Addr;

use common::OneNode;
use shoal_netd::model::Snapshot;
use shoal_netd::node::NodeRuntime;
use shoal_netd::store::Store;
use shoal_tests::sock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reaches_its_service_by_name_and_vip() {
    let t = OneNode::new("").await;
    t.store
        .put("ep/front/web.1", t.web1(Some("healthy")), 0)
        .await
        .unwrap();
    let node = serde_json::to_vec(&t.node_entry()).unwrap();
    t.store
        .put(&format!("node/{}", t.node), node, 0)
        .await
        .unwrap();
    let (entries, rev) = t.store.range("").await.unwrap();
    let snap = Snapshot::from_entries(&entries, rev);
    let mut rt = NodeRuntime::new(t.local());
    rt.reconcile(&snap).await.unwrap();

    // The replica serves inside its container, on its overlay address.
    let replica = sock::listen(&t.c1, "10.77.0.11:8000".parse().unwrap());
    let _server = sock::serve_echo(replica, "web.1\n");

    // DNS at the gateway answers the service name with its VIP.
    assert_eq!(t.ask("web").await.1, vec![Ipv4Addr::new(10, 77, 0, 200)]);

    // The VIP is balanced by the node's proxy to the replica.
    let greeting = t.greeting_via_vip().await;
    assert_eq!(&greeting, b"web.1\n");

    // Reconciling the same snapshot again changes nothing and keeps serving.
    rt.reconcile(&snap).await.unwrap();
    assert_eq!(
        t.ask("web.shoal").await.1,
        vec![Ipv4Addr::new(10, 77, 0, 200)]
    );
}
