//! The scheduler's own tests: placement, backoff, and passes over an
//! embedded store with replicas that are `sleep` children of the test.

use super::*;
use crate::model::EndpointState;

#[test]
fn slots_spread_over_nodes_and_everyone_agrees() {
    let nodes = ["n1", "n2", "n3"];
    let mut load: HashMap<String, usize> = HashMap::new();
    for slot in 1..=6 {
        let n = preferred("web", slot, nodes.iter().copied(), &load).unwrap();
        *load.entry(n.to_string()).or_default() += 1;
    }
    assert_eq!(
        load.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([2])
    );
    // The same inputs in another order pick the same node.
    let a = preferred("web", 7, nodes.iter().copied(), &load);
    let b = preferred("web", 7, nodes.iter().rev().copied(), &load);
    assert_eq!(a, b);
}

#[test]
fn backoff_starts_at_zero_doubles_and_is_capped() {
    assert_eq!(backoff(0), Duration::ZERO);
    assert_eq!(backoff(1), FIRST_BACKOFF);
    assert_eq!(backoff(2), FIRST_BACKOFF * 2);
    assert_eq!(backoff(4), FIRST_BACKOFF * 8);
    assert_eq!(backoff(7), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}

#[test]
fn a_replica_that_keeps_exiting_backs_off_and_a_stable_one_restarts_at_once() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = Runs {
        started: t0,
        fails: 0,
        retry_at: None,
    };
    // Ran 1 s: the first short run waits FIRST_BACKOFF.
    assert_eq!(r.ended(t0 + s(1)), t0 + s(1) + FIRST_BACKOFF);
    // Again at once: twice that.
    r.started = t0 + s(2);
    assert_eq!(r.ended(t0 + s(2)), t0 + s(2) + FIRST_BACKOFF * 2);
    assert_eq!(r.retry_at, Some(t0 + s(2) + FIRST_BACKOFF * 2));
    // A run of STABLE_RUN: back at once, and the count starts over.
    r.started = t0 + s(3);
    let end = t0 + s(3) + STABLE_RUN;
    assert_eq!(r.ended(end), end);
    assert_eq!(r.fails, 0);
    r.started = end;
    assert_eq!(r.ended(end), end + FIRST_BACKOFF);
}

/// A scheduler of node n1 over an embedded store, with web.1 and web.2
/// (slots of `web`, each a `sleep` child of this test) taken back as
/// running tasks.
struct Fixture {
    store: Arc<crate::store::embedded::EmbeddedStore>,
    owned: Arc<Owned>,
    tasks: Tasks,
    children: Vec<std::process::Child>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node(name: &str) -> crate::model::Node {
    crate::model::Node {
        name: name.into(),
        advertise: std::net::Ipv4Addr::new(198, 18, 0, 1),
        lb_addresses: BTreeMap::new(),
    }
}

fn web() -> Service {
    serde_json::from_str(
        r#"{"name":"web","networks":{"front":null},"replicas":2,"command":["sleep","30"]}"#,
    )
    .unwrap()
}

async fn fixture(claims: &[(u32, &str)]) -> Fixture {
    use crate::store::embedded::EmbeddedStore;
    let store = EmbeddedStore::ephemeral();
    // n1's claims hang on a lease of an earlier agent.
    let old = store.grant(Duration::from_secs(60)).await.unwrap();
    for (slot, holder) in claims {
        let lease = if *holder == "n1" { old } else { 0 };
        let key = claim_key("web", *slot);
        store
            .put(&key, holder.as_bytes().to_vec(), lease)
            .await
            .unwrap();
    }
    let owned = Owned::new(node("n1"));
    let dyn_store: Arc<dyn Store> = store.clone();
    owned
        .register(dyn_store.as_ref(), Duration::from_secs(60))
        .await
        .unwrap();
    // No node entry: a drain has nobody to wait for.
    store.delete("node/n1").await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "netd-sched-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let (_, reconciled) = watch::channel(Revision::MAX);
    let tasks = Tasks::new(
        Arc::clone(&dyn_store),
        Arc::clone(&owned),
        Arc::default(),
        reconciled,
        &dir,
    );
    let mut children = Vec::new();
    let mut recorded = BTreeMap::new();
    for slot in [1, 2] {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let name = task_name("web", slot);
        let task = Task {
            name: name.clone(),
            network: "front".into(),
            service: Some("web".into()),
            ip: std::net::Ipv4Addr::new(10, 77, 0, 10 + slot as u8),
            gateway: std::net::Ipv4Addr::new(10, 77, 0, 1),
            netns: format!("shoal-unit-absent-{}-{name}", std::process::id()),
            resolv_conf: dir.join("resolv.conf"),
            weight: 1,
            pid: Some(child.id()),
            start_time: container::start_time(child.id()),
            slot: Some(slot),
            command: web().command,
        };
        recorded.insert(name, task);
        children.push(child);
    }
    tasks
        .restore(crate::tasks::Recorded {
            tasks: recorded,
            whole: true,
        })
        .await;
    Fixture {
        store,
        owned,
        tasks,
        children,
        dir,
    }
}

fn snapshot(nodes: &[&str]) -> Snapshot {
    let mut snap = Snapshot {
        revision: 1,
        ..Snapshot::default()
    };
    snap.services.insert("web".into(), web());
    for n in nodes {
        snap.nodes.insert(n.to_string(), node(n));
    }
    snap
}

fn scheduler(f: &Fixture) -> Scheduler {
    Scheduler::new(
        f.store.clone(),
        Arc::clone(&f.owned),
        f.tasks.clone(),
        PathBuf::from("/bin/false"),
        f.dir.join("logs"),
    )
}

async fn wait_gone(tasks: &Tasks, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tasks.get(name).is_some() {
        assert!(Instant::now() < deadline, "{name} was never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn claims_move_to_the_new_lease_and_a_replica_of_a_slot_held_elsewhere_stops() {
    let mut f = fixture(&[(1, "n1"), (2, "n2")]).await;
    let mut s = scheduler(&f);
    s.pass(&snapshot(&["n1", "n2"])).await.unwrap();

    let (claims, _) = f.store.range("task/web/").await.unwrap();
    let one = claims.iter().find(|e| e.key == "task/web/1").unwrap();
    assert_eq!(one.value, b"n1");
    assert_eq!(
        one.lease,
        f.owned.lease(),
        "the claim stayed on the old lease"
    );
    // web.2's slot is n2's: the local copy is stopped, n2's claim kept.
    wait_gone(&f.tasks, "web.2").await;
    let status = f.children[1].wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15),
        "stopped with SIGTERM"
    );
    let two = claims.iter().find(|e| e.key == "task/web/2").unwrap();
    assert_eq!(two.value, b"n2");
    assert!(f.store.range("task/web/2").await.unwrap().0.len() == 1);
    assert!(f.tasks.get("web.1").is_some());
    assert!(f.children[0].try_wait().unwrap().is_none(), "web.1 runs on");
}

#[tokio::test]
async fn a_scale_down_stops_the_slots_past_the_count_and_releases_them() {
    let f = fixture(&[(1, "n1"), (2, "n1")]).await;
    let mut s = scheduler(&f);
    let mut snap = snapshot(&["n1"]);
    snap.services.get_mut("web").unwrap().replicas = 1;
    s.pass(&snap).await.unwrap();
    wait_gone(&f.tasks, "web.2").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f.store.range("task/web/2").await.unwrap().0.is_empty() {
        assert!(Instant::now() < deadline, "slot 2 was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(f.tasks.get("web.1").is_some());
    assert_eq!(f.store.range("task/web/1").await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn a_changed_command_replaces_one_replica_at_a_time_keeping_its_slot() {
    let f = fixture(&[(1, "n1"), (2, "n1")]).await;
    let mut s = scheduler(&f);
    let mut snap = snapshot(&["n1"]);
    snap.services.get_mut("web").unwrap().command = vec!["sleep".into(), "31".into()];
    let healthy = |snap: &mut Snapshot, slot: u32, state: EndpointState| {
        let ep: crate::model::Endpoint = serde_json::from_str(&format!(
            r#"{{"name":"web.{slot}","network":"front","service":"web","node":"n1","ip":"10.77.0.1{slot}"}}"#
        ))
        .unwrap();
        let ep = crate::model::Endpoint { state, ..ep };
        snap.endpoints
            .insert(("front".into(), format!("web.{slot}")), ep);
    };
    // Not while a replica is not healthy.
    healthy(&mut snap, 1, EndpointState::Healthy);
    healthy(&mut snap, 2, EndpointState::Starting);
    s.pass(&snap).await.unwrap();
    assert!(s.stopping.lock().unwrap().is_empty());
    // Then the first, alone; its slot stays claimed for its successor.
    healthy(&mut snap, 2, EndpointState::Healthy);
    s.pass(&snap).await.unwrap();
    assert_eq!(
        *s.stopping.lock().unwrap(),
        BTreeSet::from(["web.1".to_string()])
    );
    wait_gone(&f.tasks, "web.1").await;
    assert!(f.tasks.get("web.2").is_some());
    assert_eq!(f.store.range("task/web/1").await.unwrap().0.len(), 1);
    assert!(!s.runs.contains_key(&("web".to_string(), 1)), "no backoff");
    // The next pass starts web.1's successor (here it cannot: the
    // store has no network) and leaves web.2 alone while slot 1 has no
    // healthy replica.
    s.pass(&snap).await.unwrap();
    assert!(
        s.runs.contains_key(&("web".to_string(), 1)),
        "a start was tried"
    );
    assert!(s.stopping.lock().unwrap().is_empty());
    assert!(f.tasks.get("web.2").is_some());
}

#[tokio::test]
async fn a_rolling_update_takes_turns_across_nodes_through_the_update_lock() {
    let f = fixture(&[(1, "n1"), (2, "n1")]).await;
    let mut s = scheduler(&f);
    let mut snap = snapshot(&["n1", "n2"]);
    snap.services.get_mut("web").unwrap().command = vec!["sleep".into(), "31".into()];
    for slot in [1, 2] {
        let ep: crate::model::Endpoint = serde_json::from_str(&format!(
            r#"{{"name":"web.{slot}","network":"front","service":"web","node":"n1","ip":"10.77.0.1{slot}","state":"healthy"}}"#
        ))
        .unwrap();
        snap.endpoints
            .insert(("front".into(), format!("web.{slot}")), ep);
    }
    let lock = || async { f.store.range("update/web").await.unwrap().0 };
    // n2's turn: n1 waits, though its replicas are all healthy.
    f.store.put("update/web", b"n2".to_vec(), 0).await.unwrap();
    s.pass(&snap).await.unwrap();
    assert!(s.stopping.lock().unwrap().is_empty());
    // n2 is done: n1 takes the lock on its lease and replaces one replica.
    f.store.delete("update/web").await.unwrap();
    s.pass(&snap).await.unwrap();
    assert_eq!(
        *s.stopping.lock().unwrap(),
        BTreeSet::from(["web.1".to_string()])
    );
    let held = lock().await;
    assert_eq!(held[0].value, b"n1");
    assert_eq!(held[0].lease, f.owned.lease());
    wait_gone(&f.tasks, "web.1").await;
    // Slot 1 has no healthy replica yet: the lock stays n1's.
    s.pass(&snap).await.unwrap();
    assert_eq!(lock().await[0].value, b"n1");
    assert!(f.tasks.get("web.2").is_some());
    // Once what n1 holds serves with the service's command, n1 lets go.
    snap.services.get_mut("web").unwrap().command = web().command;
    f.store.put("task/web/1", b"n2".to_vec(), 0).await.unwrap();
    s.pass(&snap).await.unwrap();
    assert!(lock().await.is_empty(), "the lock was released");
    assert!(f.tasks.get("web.2").is_some());
}

#[test]
fn only_slots_up_to_the_count_of_a_runnable_service_are_wanted() {
    let mut snap = Snapshot::default();
    let svc: Service = serde_json::from_str(
        r#"{"name":"web","networks":{"front":null},"replicas":2,"command":["true"]}"#,
    )
    .unwrap();
    snap.services.insert("web".into(), svc.clone());
    let slot = |n| ("web".to_string(), n);
    assert!(wanted(&snap, &slot(1)) && wanted(&snap, &slot(2)));
    assert!(!wanted(&snap, &slot(3)));
    assert!(!wanted(&snap, &("db".to_string(), 1)));
    let idle = Service {
        command: Vec::new(),
        ..svc
    };
    snap.services.insert("web".into(), idle);
    assert!(!wanted(&snap, &slot(1)), "no command, no replicas");
}
