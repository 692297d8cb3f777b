use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{keys, net, svc, value};
use crate::model::{keys as model_keys, Endpoint, EndpointMode, EndpointState, HealthCheck, Node};
use crate::ops::*;
use crate::spec::ServiceUpdate;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;

async fn two_networks(s: &dyn Store) {
    create_network(s, net("front", Some("10.77.0.0/24")))
        .await
        .unwrap();
    create_network(s, net("back", Some("10.78.0.0/24")))
        .await
        .unwrap();
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test]
async fn vips_are_allocated_released_on_remove_and_reused() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    let web = create_service(s, svc("web", &["front", "back"], &[8080]))
        .await
        .unwrap();
    let vip = web.networks["front"].unwrap();
    assert!(web.networks["back"].is_some());
    assert_eq!(value(s, "alloc/port/8080").await.as_deref(), Some("web"));
    // Identical again: the same service; different: a conflict.
    assert_eq!(
        create_service(s, svc("web", &["front", "back"], &[8080]))
            .await
            .unwrap(),
        web
    );
    let err = create_service(s, svc("web", &["front", "back"], &[8081]))
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.field()), (409, Some("ports")));
    assert_eq!(
        err.to_string(),
        "service `web` already exists with other ports; update it instead"
    );

    assert_eq!(remove_service(s, "web").await.unwrap(), web);
    assert_eq!(value(s, "alloc/port/8080").await, None);
    let api = create_service(s, svc("api", &["front"], &[8080]))
        .await
        .unwrap();
    assert_eq!(api.networks["front"], Some(vip), "the VIP is free again");
    assert_eq!(remove_service(s, "web").await.unwrap_err().status(), 404);
}

#[tokio::test]
async fn a_given_vip_is_claimed_and_a_taken_one_names_its_service() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    let mut db = svc("db", &["front"], &[]);
    db.networks.insert("front".into(), Some(ip("10.77.0.200")));
    assert_eq!(
        create_service(s, db).await.unwrap().networks["front"],
        Some(ip("10.77.0.200"))
    );
    // The second network's VIP fails after the first one's was allocated:
    // the first is given back.
    let mut cache = svc("cache", &["back", "front"], &[6379]);
    cache
        .networks
        .insert("front".into(), Some(ip("10.77.0.200")));
    let err = create_service(s, cache).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 10.77.0.200 in network `front` is already the VIP of service `db`"
    );
    assert_eq!(err.field(), Some("networks"));
    let (entries, _) = s.range("ipam/").await.unwrap();
    assert!(
        entries.iter().all(|e| !e.value.ends_with(b"vip:cache")),
        "{entries:?}"
    );
    assert_eq!(value(s, "alloc/port/6379").await, None);
    assert!(get_service(s, "cache").await.is_err());
}

#[tokio::test]
async fn a_taken_published_port_names_the_service_holding_it() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    create_service(s, svc("api", &["front"], &[8080]))
        .await
        .unwrap();
    let err = create_service(s, svc("web", &["front"], &[9000, 8080]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "published port 8080 is already taken by service `api`"
    );
    assert_eq!((err.status(), err.field()), (409, Some("ports")));
    // Port 9000, claimed before 8080 failed, is given back.
    assert_eq!(keys(s, "alloc/port/").await, ["alloc/port/8080"]);
}

#[tokio::test]
async fn a_failed_update_changes_nothing() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    let web = create_service(s, svc("web", &["front"], &[8080]))
        .await
        .unwrap();
    create_service(s, svc("api", &["front"], &[9090]))
        .await
        .unwrap();
    let upd = ServiceUpdate {
        ports: Some(svc("x", &[], &[8081, 9090]).ports),
        replicas: Some(0),
        ..Default::default()
    };
    let err = update_service(s, "web", upd).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "published port 9090 is already taken by service `api`"
    );
    assert_eq!(get_service(s, "web").await.unwrap(), web);
    assert_eq!(value(s, "alloc/port/8080").await.as_deref(), Some("web"));
    assert_eq!(value(s, "alloc/port/8081").await, None);
    // A good update moves the port: the old one is released after.
    let upd = ServiceUpdate {
        ports: Some(svc("x", &[], &[8081]).ports),
        ..Default::default()
    };
    update_service(s, "web", upd).await.unwrap();
    assert_eq!(
        keys(s, "alloc/port/").await,
        ["alloc/port/8081", "alloc/port/9090"]
    );
    let err = update_service(s, "nope", ServiceUpdate::default())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "service `nope` does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_leave_exactly_the_winners_claims() {
    let store = EmbeddedStore::ephemeral();
    two_networks(store.as_ref()).await;
    create_service(store.as_ref(), svc("web", &["front"], &[8000]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 1..=10u16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let upd = ServiceUpdate {
                ports: Some(svc("x", &[], &[8000 + i]).ports),
                ..Default::default()
            };
            update_service(store.as_ref(), "web", upd).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = store.as_ref();
    let web = get_service(s, "web").await.unwrap();
    let port = web.ports[0].published.unwrap();
    assert_eq!(keys(s, "alloc/port/").await, [format!("alloc/port/{port}")]);
}

#[tokio::test]
async fn switching_endpoint_modes_releases_and_allocates_vips() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    let web = create_service(s, svc("web", &["front"], &[80]))
        .await
        .unwrap();
    let vip = web.networks["front"].unwrap();
    let dnsrr = ServiceUpdate {
        endpoint_mode: Some(EndpointMode::Dnsrr),
        ..Default::default()
    };
    let web = update_service(s, "web", dnsrr).await.unwrap();
    assert_eq!(web.networks["front"], None);
    assert_eq!(
        web.ports[0].published,
        Some(80),
        "dnsrr keeps published ports"
    );
    let other = create_service(s, svc("other", &["front"], &[]))
        .await
        .unwrap();
    assert_eq!(other.networks["front"], Some(vip), "the VIP was released");
    let back = ServiceUpdate {
        endpoint_mode: Some(EndpointMode::Vip),
        ..Default::default()
    };
    let web = update_service(s, "web", back).await.unwrap();
    assert!(web.networks["front"].is_some_and(|v| v != vip));
    // A dnsrr service may not ask for a VIP.
    let mut bad = svc("bad", &["front"], &[]);
    bad.endpoint_mode = EndpointMode::Dnsrr;
    bad.networks.insert("front".into(), Some(ip("10.77.0.99")));
    let err = create_service(s, bad).await.unwrap_err();
    assert_eq!((err.status(), err.field()), (400, Some("networks")));
}

#[tokio::test]
async fn scaling_needs_a_command() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    create_service(s, svc("web", &["front"], &[]))
        .await
        .unwrap();
    let err = scale_service(s, "web", 3).await.unwrap_err();
    assert_eq!((err.status(), err.field()), (400, Some("command")));
    assert_eq!(
        err.to_string(),
        "service `web` asks for 3 replicas but has no command to run"
    );
    let upd = ServiceUpdate {
        command: Some(vec!["sleep".into(), "1000".into()]),
        ..Default::default()
    };
    update_service(s, "web", upd).await.unwrap();
    assert_eq!(scale_service(s, "web", 3).await.unwrap().replicas, 3);
    assert_eq!(scale_service(s, "web", 0).await.unwrap().replicas, 0);
}

#[tokio::test]
async fn services_are_checked_before_anything_is_written() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    let err = create_service(s, svc("web", &["front", "nowhere"], &[]))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "network `nowhere` does not exist");
    assert_eq!(err.status(), 404);
    let mut twice = svc("web", &["front"], &[80, 81]);
    twice.ports[1].target = twice.ports[0].target;
    let err = create_service(s, twice).await.unwrap_err();
    assert_eq!(err.to_string(), "target port 1080 is listed twice");
    let mut slow = svc("web", &["front"], &[]);
    slow.health = HealthCheck {
        interval_ms: 100,
        timeout_ms: 200,
        ..Default::default()
    };
    assert_eq!(
        create_service(s, slow).await.unwrap_err().field(),
        Some("health")
    );
    assert_eq!(
        create_service(s, svc("w.x", &["front"], &[]))
            .await
            .unwrap_err()
            .field(),
        Some("name")
    );
    assert_eq!(
        create_service(s, svc("web", &[], &[]))
            .await
            .unwrap_err()
            .field(),
        Some("networks")
    );
    assert!(keys(s, "svc/").await.is_empty() && keys(s, "alloc/port/").await.is_empty());
}

#[tokio::test]
async fn apply_creates_updates_or_leaves_alone() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    let a = apply_service(s, svc("web", &["front"], &[80]))
        .await
        .unwrap();
    assert_eq!(a.change, Change::Created);
    let vip = a.service.networks["front"];
    let b = apply_service(s, svc("web", &["front"], &[80]))
        .await
        .unwrap();
    assert_eq!((b.change, &b.service), (Change::Unchanged, &a.service));
    // A network added: the old VIP is kept, one allocated for the new one.
    let c = apply_service(s, svc("web", &["front", "back"], &[80]))
        .await
        .unwrap();
    assert_eq!(c.change, Change::Updated);
    assert_eq!(c.service.networks["front"], vip);
    assert!(c.service.networks["back"].is_some());
    // And dropped again: its VIP is released.
    let d = apply_service(s, svc("web", &["front"], &[80]))
        .await
        .unwrap();
    assert_eq!(d.change, Change::Updated);
    let (entries, _) = s.range("ipam/back/addr/").await.unwrap();
    assert!(entries.is_empty(), "{entries:?}");
    assert_eq!(serde_json::to_value(&d).unwrap()["change"], "updated");
}

#[tokio::test]
async fn tasks_are_a_services_endpoints_across_networks_by_name() {
    let store = EmbeddedStore::ephemeral();
    let s = store.as_ref();
    two_networks(s).await;
    create_service(s, svc("web", &["front", "back"], &[]))
        .await
        .unwrap();
    for (net, name, service) in [
        ("front", "web.2", Some("web")),
        ("back", "web.1", Some("web")),
        ("front", "web.1", Some("web")),
        ("front", "api.1", Some("api")),
        ("front", "box", None),
    ] {
        let ep = Endpoint {
            name: name.into(),
            network: net.into(),
            service: service.map(Into::into),
            node: "n1".into(),
            ip: ip("10.77.0.50"),
            weight: 1,
            state: EndpointState::Healthy,
        };
        let key = model_keys::endpoint(net, name);
        s.put(&key, serde_json::to_vec(&ep).unwrap(), 0)
            .await
            .unwrap();
    }
    let tasks = service_tasks(s, "web").await.unwrap();
    let got: Vec<(&str, &str)> = tasks
        .iter()
        .map(|e| (e.name.as_str(), e.network.as_str()))
        .collect();
    assert_eq!(
        got,
        [("web.1", "back"), ("web.1", "front"), ("web.2", "front")]
    );
    assert_eq!(service_tasks(s, "api").await.unwrap_err().status(), 404);

    let node = Node {
        name: "n1".into(),
        advertise: ip("198.18.0.1"),
        lb_addresses: Default::default(),
    };
    s.put(
        &model_keys::node("n1"),
        serde_json::to_vec(&node).unwrap(),
        0,
    )
    .await
    .unwrap();
    assert_eq!(list_nodes(s).await.unwrap(), [node]);
    assert_eq!(list_services(s).await.unwrap().len(), 1);
}
