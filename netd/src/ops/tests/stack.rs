use std::time::Duration;

use super::{keys, net, svc};
use crate::model::{keys as model_keys, Endpoint, EndpointState};
use crate::ops::*;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;

fn names(items: &[StackItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| format!("{} {}", i.kind, i.name))
        .collect()
}

#[tokio::test]
async fn a_deploy_creates_then_is_idempotent_then_updates() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    create_network(s, net("shared", Some("10.5.0.0/24")))
        .await
        .unwrap();
    let nets = vec![net("front", None), net("back", Some("10.6.0.0/24"))];
    let svcs = vec![
        svc("web", &["front", "shared"], &[8080]),
        svc("db", &["back"], &[]),
    ];
    let r = deploy_stack(s, "shop", nets.clone(), svcs.clone())
        .await
        .unwrap();
    assert_eq!(
        names(&r.created),
        ["network front", "network back", "service web", "service db"]
    );
    let web = get_service(s, "web").await.unwrap();
    assert_eq!(web.labels[STACK_LABEL], "shop");
    assert_eq!(
        get_network(s, "front").await.unwrap().labels[STACK_LABEL],
        "shop"
    );

    let r = deploy_stack(s, "shop", nets.clone(), svcs.clone())
        .await
        .unwrap();
    assert!(r.created.is_empty() && r.updated.is_empty());
    assert_eq!(r.unchanged.len(), 4);

    let mut svcs2 = svcs.clone();
    svcs2[0] = svc("web", &["front", "shared"], &[8081]);
    let r = deploy_stack(s, "shop", nets, svcs2).await.unwrap();
    assert_eq!(names(&r.updated), ["service web"]);
    assert_eq!(keys(s, "alloc/port/").await, ["alloc/port/8081"]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["updated"][0]["name"], "web");
}

#[tokio::test]
async fn a_bad_object_anywhere_means_nothing_is_created() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    let nets = vec![net("front", None), net("back", Some("10.6.0.0/24"))];
    let mut bad = svc("worker", &["back"], &[]);
    bad.replicas = 2;
    let err = deploy_stack(
        s,
        "shop",
        nets.clone(),
        vec![svc("web", &["front"], &[80]), bad],
    )
    .await
    .unwrap_err();
    assert_eq!(err.field(), Some("command"));
    assert!(err.to_string().starts_with("service `worker`: "), "{err}");
    let err = deploy_stack(s, "shop", nets.clone(), vec![svc("web", &["nowhere"], &[])])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "network `nowhere` does not exist");
    let mut overlapping = nets.clone();
    overlapping.push(net("more", Some("10.6.0.128/25")));
    let err = deploy_stack(s, "shop", overlapping, vec![])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network `more`: subnet 10.6.0.128/25 overlaps network `back` (10.6.0.0/24)"
    );
    assert!(list_networks(s).await.unwrap().is_empty());
    assert!(
        keys(s, "alloc/").await.is_empty(),
        "{:?}",
        keys(s, "alloc/").await
    );
}

#[tokio::test]
async fn ports_held_outside_the_stack_and_foreign_services_are_refused() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    create_network(s, net("shared", Some("10.5.0.0/24")))
        .await
        .unwrap();
    create_service(s, svc("api", &["shared"], &[8080]))
        .await
        .unwrap();
    let err = deploy_stack(
        s,
        "shop",
        vec![net("front", None)],
        vec![svc("web", &["front"], &[8080])],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service `web`: published port 8080 is already taken by service `api`"
    );
    let err = deploy_stack(s, "shop", vec![], vec![svc("api", &["shared"], &[8080])])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service `api` already exists outside any stack"
    );
    assert_eq!(list_networks(s).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_failure_while_applying_backs_out_the_whole_deploy() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    // A /29 has five addresses besides the gateway: the sixth VIP fails.
    let nets = vec![net("tiny", Some("10.7.0.0/29"))];
    let svcs: Vec<_> = (0..6)
        .map(|i| svc(&format!("s{i}"), &["tiny"], &[9000 + i]))
        .collect();
    let err = deploy_stack(s, "big", nets, svcs).await.unwrap_err();
    assert!(err.to_string().contains("no free address left"), "{err}");
    assert!(list_networks(s).await.unwrap().is_empty());
    assert!(list_services(s).await.unwrap().is_empty());
    assert!(keys(s, "alloc/port/").await.is_empty());
    assert!(keys(s, "alloc/vni/").await.is_empty());
    assert!(keys(s, "ipam/").await.is_empty());
}

fn endpoint(net: &str, name: &str, service: Option<&str>) -> (String, Vec<u8>) {
    let ep = Endpoint {
        name: name.into(),
        network: net.into(),
        service: service.map(Into::into),
        node: "n1".into(),
        ip: "10.96.0.9".parse().unwrap(),
        weight: 1,
        state: EndpointState::Healthy,
    };
    (
        model_keys::endpoint(net, name),
        serde_json::to_vec(&ep).unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn removal_takes_services_then_networks_once_replicas_are_gone() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    deploy_stack(
        s,
        "shop",
        vec![net("front", None)],
        vec![svc("web", &["front"], &[80])],
    )
    .await
    .unwrap();
    // A service from outside on the stack's network: refused, nothing removed.
    create_service(s, svc("spy", &["front"], &[]))
        .await
        .unwrap();
    let err = remove_stack(s, "shop").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "network `front` of stack `shop` is used by service `spy` outside the stack"
    );
    assert!(get_service(s, "web").await.is_ok());
    remove_service(s, "spy").await.unwrap();

    // A replica still attached: removal waits for it to go.
    let (key, value) = endpoint("front", "web.1", Some("web"));
    s.put(&key, value, 0).await.unwrap();
    let remover = {
        let store = store.clone();
        tokio::spawn(async move { remove_stack(store.as_ref(), "shop").await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.delete(&key).await.unwrap();
    let removed = remover.await.unwrap().unwrap();
    assert_eq!(
        (removed.services, removed.networks),
        (vec!["web".to_string()], vec!["front".to_string()])
    );
    assert!(keys(s, "alloc/").await.iter().all(|k| k == "alloc/subnets"));
    assert_eq!(remove_stack(s, "shop").await.unwrap_err().status(), 404);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_never_leaves_keeps_the_network_and_says_so() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    deploy_stack(
        s,
        "shop",
        vec![net("front", None)],
        vec![svc("web", &["front"], &[])],
    )
    .await
    .unwrap();
    let (key, value) = endpoint("front", "web.1", Some("web"));
    s.put(&key, value, 0).await.unwrap();
    let err = remove_stack(s, "shop").await.unwrap_err();
    assert_eq!(err.status(), 409);
    assert!(err.to_string().contains("remove the stack again"), "{err}");
    assert!(list_services(s).await.unwrap().is_empty());
    s.delete(&key).await.unwrap();
    assert_eq!(remove_stack(s, "shop").await.unwrap().networks, ["front"]);
}
