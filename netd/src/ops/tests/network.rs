use std::collections::BTreeSet;
use std::sync::Arc;

use super::{keys, net, svc, value};
use crate::model::{keys as model_keys, Endpoint, EndpointState};
use crate::ops::*;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;

#[tokio::test]
async fn overlapping_subnets_are_refused_naming_the_other_network() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    let back = create_network(s, net("back", Some("10.77.0.0/16")))
        .await
        .unwrap();
    assert_eq!(back.gateway.to_string(), "10.77.0.1");
    assert_eq!(back.vni, 4096);
    let err = create_network(s, net("front", Some("10.77.0.0/24")))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subnet 10.77.0.0/24 overlaps network `back` (10.77.0.0/16)"
    );
    assert_eq!((err.status(), err.field()), (409, Some("subnet")));
    // The wider one over the narrower one too.
    create_network(s, net("small", Some("10.80.1.0/24")))
        .await
        .unwrap();
    let err = create_network(s, net("big", Some("10.80.0.0/16")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("network `small`"), "{err}");
    // Nothing of the refused ones was kept.
    assert_eq!(keys(s, "net/").await, ["net/back", "net/small"]);
    assert_eq!(keys(s, "alloc/vni/").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_ten_concurrent_overlapping_creates_exactly_one_succeeds() {
    let store = EmbeddedStore::ephemeral();
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            // All nested in 10.50.0.0/16, so every pair overlaps.
            let subnet = format!("10.50.0.0/{}", 16 + i);
            create_network(store.as_ref(), net(&format!("n{i}"), Some(&subnet))).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.field(), Some("subnet"), "{e}"),
        }
    }
    assert_eq!(ok, 1);
    let s = store.as_ref();
    assert_eq!(list_networks(s).await.unwrap().len(), 1);
    assert_eq!(keys(s, "alloc/vni/").await.len(), 1, "losers hold no VNI");
    let reservations = value(s, "alloc/subnets").await.unwrap();
    assert_eq!(reservations.matches('/').count(), 1, "{reservations}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn networks_without_a_subnet_get_distinct_24s_from_the_pool() {
    let store = EmbeddedStore::ephemeral();
    create_network(store.as_ref(), net("fixed", Some("10.96.0.0/24")))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            create_network(store.as_ref(), net(&format!("auto{i}"), None))
                .await
                .unwrap()
        }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        let n = t.await.unwrap();
        assert_eq!(n.subnet.prefix_len(), 24);
        assert!(POOL.contains(&n.subnet));
        assert_eq!(n.gateway, crate::ops::validate::default_gateway(n.subnet));
        assert!(got.insert(n.subnet), "{} handed out twice", n.subnet);
    }
    let expected: BTreeSet<_> = (1..=10)
        .map(|i| format!("10.96.{i}.0/24").parse().unwrap())
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn creating_again_is_idempotent_and_a_different_spec_conflicts() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    let mut spec = net("front", Some("10.77.0.0/24"));
    spec.mtu = Some(1400);
    let first = create_network(s, spec.clone()).await.unwrap();
    assert_eq!(create_network(s, spec.clone()).await.unwrap(), first);
    // Fields left out match what the network has.
    let mut loose = spec.clone();
    loose.subnet = None;
    assert_eq!(create_network(s, loose).await.unwrap(), first);
    spec.mtu = Some(1500);
    let err = create_network(s, spec).await.unwrap_err();
    assert_eq!(err.field(), Some("mtu"));
    assert_eq!(
        err.to_string(),
        "network `front` already exists with mtu 1400 (asked: 1500)"
    );
    assert_eq!(keys(s, "alloc/vni/").await.len(), 1);
}

#[tokio::test]
async fn a_failed_create_leaves_nothing_and_a_retry_works() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    let a = create_network(s, net("a", Some("10.1.0.0/24")))
        .await
        .unwrap();
    let mut b = net("b", Some("10.2.0.0/24"));
    b.vni = Some(a.vni);
    let err = create_network(s, b.clone()).await.unwrap_err();
    assert_eq!(err.to_string(), "VNI 4096 is already used by network `a`");
    assert_eq!(err.field(), Some("vni"));
    // The subnet reserved before the VNI failed was given back.
    let reservations = value(s, "alloc/subnets").await.unwrap();
    assert!(!reservations.contains("\"b\""), "{reservations}");
    b.vni = None;
    assert_eq!(create_network(s, b).await.unwrap().vni, 4097);
}

#[tokio::test]
async fn a_create_that_stopped_part_way_is_finished_by_a_retry() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    // A reservation with no network (the creator died after reserving).
    s.put("alloc/subnets", br#"{"x":"10.9.0.0/24"}"#.to_vec(), 0)
        .await
        .unwrap();
    let err = create_network(s, net("x", Some("10.8.0.0/24")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("10.9.0.0/24 is reserved for network `x`"),
        "{err}"
    );
    let err = create_network(s, net("y", Some("10.9.0.0/25")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("overlaps network `x`"), "{err}");
    let x = create_network(s, net("x", None)).await.unwrap();
    assert_eq!(x.subnet.to_string(), "10.9.0.0/24");
}

#[tokio::test]
async fn removal_releases_the_vni_subnet_and_addresses_for_reuse() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    let a = create_network(s, net("a", Some("10.1.0.0/24")))
        .await
        .unwrap();
    let b = create_network(s, net("b", Some("10.2.0.0/24")))
        .await
        .unwrap();
    assert_eq!((a.vni, b.vni), (4096, 4097));
    s.put("ipam/a/block/10.1.0.0", b"n1".to_vec(), 0)
        .await
        .unwrap();
    assert_eq!(remove_network(s, "a").await.unwrap(), a);
    assert!(keys(s, "ipam/a/").await.is_empty());
    assert_eq!(
        get_network(s, "a").await.unwrap_err(),
        OpError::NotFound {
            kind: "network",
            name: "a".into()
        }
    );
    // Its VNI and subnet are free again.
    let c = create_network(s, net("c", Some("10.1.0.0/16")))
        .await
        .unwrap();
    assert_eq!(c.vni, 4096);
    assert_eq!(remove_network(s, "a").await.unwrap_err().status(), 404);
}

#[tokio::test]
async fn removal_is_refused_while_a_service_or_an_endpoint_uses_the_network() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    create_network(s, net("front", Some("10.77.0.0/24")))
        .await
        .unwrap();
    create_service(s, svc("web", &["front"], &[]))
        .await
        .unwrap();
    let err = remove_network(s, "front").await.unwrap_err();
    assert_eq!(err.status(), 409);
    assert_eq!(err.to_string(), "network `front` is used by service `web`");
    remove_service(s, "web").await.unwrap();
    let ep = Endpoint {
        name: "box.1".into(),
        network: "front".into(),
        service: None,
        node: "n1".into(),
        ip: "10.77.0.9".parse().unwrap(),
        weight: 1,
        state: EndpointState::Healthy,
    };
    let key = model_keys::endpoint("front", "box.1");
    s.put(&key, serde_json::to_vec(&ep).unwrap(), 0)
        .await
        .unwrap();
    let err = remove_network(s, "front").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "network `front` still has endpoint `box.1` attached"
    );
    assert!(get_network(s, "front").await.is_ok());
    s.delete(&key).await.unwrap();
    remove_network(s, "front").await.unwrap();
    assert!(list_networks(s).await.unwrap().is_empty());
}

#[tokio::test]
async fn encrypted_networks_are_refused_not_stored_unbuilt() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    let mut spec = net("secret", Some("10.90.0.0/24"));
    spec.encrypted = true;
    let err = create_network(s, spec).await.unwrap_err();
    assert_eq!((err.status(), err.field()), (400, Some("encrypted")));
    assert!(err.to_string().contains("not built by netd"), "{err}");
    assert!(keys(s, "").await.is_empty(), "nothing written");
}
