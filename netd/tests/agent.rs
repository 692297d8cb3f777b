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
