//! Replica health through the agent, in namespaces: a replica is checked
//! from its network's sandbox, and its state in the store follows its
//! process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::OneNode;
use shoal_netd::agent::Agent;
use shoal_netd::model::{Endpoint, EndpointState};
use shoal_netd::store::embedded::EmbeddedStore;
use shoal_netd::store::Store;
use shoal_tests::sock;

async fn state(store: &EmbeddedStore) -> EndpointState {
    let (e, _) = store.range("ep/front/web.1").await.unwrap();
    serde_json::from_slice::<Endpoint>(&e[0].value)
        .unwrap()
        .state
}

async fn wait_state(store: &EmbeddedStore, want: EndpointState) {
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
    let check = r#","health":{"check":"tcp","interval_ms":100,"timeout_ms":200,"rise":1,"fall":2}"#;
    let t = OneNode::new(check).await;
    t.store
        .put("ep/front/web.1", t.web1(None), 0)
        .await
        .unwrap();
    let agent = Agent::start(
        t.store.clone(),
        t.node_entry(),
        t.local(),
        Duration::from_secs(5),
    );

    // Nothing listens yet: the replica goes from starting to unhealthy.
    wait_state(&t.store, EndpointState::Unhealthy).await;

    // Its process starts listening: healthy.
    let addr: SocketAddr = "10.77.0.11:8000".parse().unwrap();
    let c = t.c1.clone();
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
    wait_state(&t.store, EndpointState::Healthy).await;

    // It dies: unhealthy again after `fall` failed checks.
    server.abort();
    let _ = server.await;
    wait_state(&t.store, EndpointState::Unhealthy).await;
    agent.stop().await;
}
