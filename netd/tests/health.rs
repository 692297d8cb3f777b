//! Replica health through the agent, in namespaces: a replica is checked
//! from its network's sandbox, and its state in the store (and so in DNS)
//! follows its process.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use shoal_netd::agent::Agent;
use shoal_netd::model::{Endpoint, EndpointState, Node};
use shoal_netd::store::memory::MemoryStore;
use shoal_netd::store::Store;
use shoal_netd::translate::Local;
use shoal_tests::{sock, Lab};

async fn state(store: &MemoryStore) -> EndpointState {
    let (e, _) = store.range("ep/front/web.1").await.unwrap();
    serde_json::from_slice::<Endpoint>(&e[0].value)
        .unwrap()
        .state
}

async fn wait_state(store: &MemoryStore, want: EndpointState) {
    for _ in 0..100 {
        if state(store).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica never {want:?}; it is {:?}", state(store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_state_follows_its_process() {
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
            br#"{"name":"web","networks":{"front":"10.77.0.200"},"ports":[{"target":8000}],"health":{"check":"tcp","interval_ms":100,"timeout_ms":200,"rise":1,"fall":2}}"#.to_vec(),
            0,
        )
        .await
        .unwrap();
    let ep = format!(
        r#"{{"name":"web.1","network":"front","service":"web","node":"{}","ip":"10.77.0.11"}}"#,
        node.name
    );
    store
        .put("ep/front/web.1", ep.into_bytes(), 0)
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
    let agent = Agent::start(store.clone(), me, local, Duration::from_secs(5));

    // Nothing listens yet: the replica goes from starting to unhealthy.
    wait_state(&store, EndpointState::Unhealthy).await;

    // Its process starts listening: healthy.
    let addr: SocketAddr = "10.77.0.11:8000".parse().unwrap();
    let c = c1.clone();
    let std_listener = tokio::task::spawn_blocking(move || {
        let l = sock::listen(&c, addr);
        l.set_nonblocking(true).unwrap();
        l
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let server = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    wait_state(&store, EndpointState::Healthy).await;

    // It dies: unhealthy again after `fall` failed checks.
    server.abort();
    let _ = server.await;
    wait_state(&store, EndpointState::Unhealthy).await;
    agent.stop().await;
}
