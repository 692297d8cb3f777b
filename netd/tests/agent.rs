//! The agent loop in namespaces: changes written to the store reach the
//! node's DNS and datapath without anyone calling reconcile.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::OneNode;
use shoal_netd::agent::Agent;
use shoal_netd::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_changes_reach_dns_without_a_restart() {
    let t = OneNode::new("").await;
    let mut agent = Agent::start(
        t.store.clone(),
        t.node_entry(),
        t.local(),
        Duration::from_secs(5),
    );

    // A replica appears in the store: its container is attached, the
    // service name answers with the VIP and tasks.web with the replica.
    let rev = t
        .store
        .put("ep/front/web.1", t.web1(Some("healthy")), 0)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();
    assert_eq!(t.ask("web").await, (0, vec![Ipv4Addr::new(10, 77, 0, 200)]));
    assert_eq!(
        t.ask("tasks.web").await.1,
        vec![Ipv4Addr::new(10, 77, 0, 11)]
    );

    // It turns unhealthy: DNS stops naming it, the VIP stays.
    let rev = t
        .store
        .put("ep/front/web.1", t.web1(Some("unhealthy")), 0)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();
    assert!(t.ask("tasks.web").await.1.is_empty());
    assert_eq!(t.ask("web").await.1, vec![Ipv4Addr::new(10, 77, 0, 200)]);

    // Healthy again: back, with no restart anywhere.
    let rev = t
        .store
        .put("ep/front/web.1", t.web1(Some("healthy")), 0)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();
    assert_eq!(
        t.ask("tasks.web").await.1,
        vec![Ipv4Addr::new(10, 77, 0, 11)]
    );

    // The node registered itself on its lease.
    let (entries, _) = t.store.range(&format!("node/{}", t.node)).await.unwrap();
    assert!(entries[0].lease != 0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_takes_its_own_lb_address_and_the_vip_works_through_it() {
    let t = OneNode::new("").await;
    let mut me = t.node_entry();
    me.lb_addresses.clear();
    let mut agent = Agent::start(t.store.clone(), me, t.local(), Duration::from_secs(5));
    let rev = t
        .store
        .put("ep/front/web.1", t.web1(Some("healthy")), 0)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.converged(rev))
        .await
        .unwrap();

    // The node allocated an lb address in `front` from its own block and
    // published it in its entry.
    let (entries, _) = t.store.range(&format!("node/{}", t.node)).await.unwrap();
    let node: shoal_netd::model::Node = serde_json::from_slice(&entries[0].value).unwrap();
    let lb = node.lb_addresses["front"];
    let subnet: ipnet::Ipv4Net = "10.77.0.0/24".parse().unwrap();
    assert!(
        subnet.contains(&lb)
            && lb != Ipv4Addr::new(10, 77, 0, 1)
            && lb != Ipv4Addr::new(10, 77, 0, 11),
        "{lb}"
    );

    // The proxy's outbound connections leave from it: the VIP works.
    let replica = shoal_tests::sock::listen(&t.c1, "10.77.0.11:8000".parse().unwrap());
    let _server = shoal_tests::sock::serve_echo(replica, "web.1\n");
    let greeting = t.greeting_via_vip().await;
    assert_eq!(&greeting, b"web.1\n");
    agent.stop().await;
}
