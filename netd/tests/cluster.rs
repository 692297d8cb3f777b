//! Two nodes sharing a real etcd, each with its own `netd agent`: what one
//! node is told, every node does. Replicas on both nodes are reached by
//! name, VIP and published port from either; a replica's failure and a
//! node's death reach the other node; and the time from a failed check to
//! every node excluding the replica is measured (printed, and recorded in
//! bench/README.md — never asserted as a timing).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_netd::api::client::{ApiAddr, Client};
use shoal_netd::store::etcd::EtcdStore;
use shoal_netd::store::{Event, Store, WatchItem};
use shoal_tests::etcd::Etcd;
use shoal_tests::{sock, Lab};
use support::{http_replica, replicas_seen, wait_for, Agent};

const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Two nodes, one etcd, two agents. Fields drop in order: agents, then
/// etcd, then the namespaces and files.
struct Two {
    a1: Agent,
    a2: Agent,
    etcd: Etcd,
    n1: String,
    n2: String,
    dir: PathBuf,
    lab: Lab,
}

impl Two {
    fn start() -> Two {
        let mut lab = Lab::new();
        let n1 = lab.node("n1", N1).name;
        let n2 = lab.node("n2", N2).name;
        let etcd = Etcd::start();
        let dir = std::env::temp_dir().join(format!("netd-cluster-{}", lab.prefix()));
        let store = etcd.store_url();
        let flags = ["--store", store.as_str()];
        let a1 = Agent::start(&n1, N1, &dir.join("n1"), &flags);
        let a2 = Agent::start(&n2, N2, &dir.join("n2"), &flags);
        Two {
            a1,
            a2,
            etcd,
            n1,
            n2,
            dir,
            lab,
        }
    }

    fn task_ns(&self, node: &str, task: &str) -> String {
        format!("shoal-t.{node}.{task}")
    }
}

impl Drop for Two {
    fn drop(&mut self) {
        let _ = self.a1.proc.stop(Duration::from_secs(10));
        let _ = self.a2.proc.stop(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = self.lab.prefix();
    }
}

fn ask(ns: &str, name: &str) -> Vec<Ipv4Addr> {
    if !std::path::Path::new("/run/netns").join(ns).exists() {
        return vec![];
    }
    let mut ips = shoal_tests::dns::query_a(ns, "10.77.0.1:53".parse().unwrap(), name).1;
    ips.sort();
    ips
}

#[test]
fn what_one_node_is_told_every_node_does() {
    let t = Two::start();
    t.a1.ok(&["network", "create", "front", "--subnet", "10.77.0.0/16"]);
    t.a2.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--publish",
        "8080:8000",
        "--health",
        "tcp",
        "--health-interval",
        "200ms",
    ]);
    let nodes = t.a1.json(&["node", "ls"]);
    assert_eq!(nodes.as_array().unwrap().len(), 2, "{nodes}");

    // A replica on each node, each started through its own node's agent.
    let _r1 = http_replica(&t.a1, &t.dir, "front", "web", "web.1");
    let _r2 = http_replica(&t.a2, &t.dir, "front", "web", "web.2");
    let tasks = t.a1.wait_healthy("web", 2);
    let by_node: Vec<(String, String)> = tasks
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(by_node.contains(&("web.1".into(), t.n1.clone())));
    assert!(by_node.contains(&("web.2".into(), t.n2.clone())));

    // A client on each node sees both replicas by name, VIP and port.
    let _c1 = t.a1.sleeper(&t.dir, "front", "c1");
    let _c2 = t.a2.sleeper(&t.dir, "front", "c2");
    let (c1, c2) = (t.task_ns(&t.n1, "c1"), t.task_ns(&t.n2, "c2"));
    let mut ips: Vec<Ipv4Addr> = tasks
        .iter()
        .map(|e| e["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    ips.sort();
    for c in [&c1, &c2] {
        wait_for("the client's DNS", Duration::from_secs(20), || {
            ask(c, "tasks.web") == ips
        });
    }
    let vip = t.a2.vip("web", "front");
    let both: std::collections::BTreeSet<String> =
        ["web.1", "web.2"].iter().map(|s| s.to_string()).collect();
    for c in [&c1, &c2] {
        assert_eq!(ask(c, "web"), vec![vip]);
        assert_eq!(
            replicas_seen(c, SocketAddr::new(vip.into(), 8000), 20),
            both
        );
    }
    // The routing mesh: each node's published port, from the other node.
    assert_eq!(
        replicas_seen(&t.n1, SocketAddr::new(N2.into(), 8080), 20),
        both
    );
    assert_eq!(
        replicas_seen(&t.n2, SocketAddr::new(N1.into(), 8080), 20),
        both
    );

    // Cross-node container-to-container, straight over the overlay.
    let c2_ip = ask(&c1, "c2")[0];
    let l = sock::listen(&c2, SocketAddr::new(c2_ip.into(), 9000));
    let _echo = sock::serve_echo(l, "hello\n");
    let mut s = sock::connect(&c1, SocketAddr::new(c2_ip.into(), 9000), None).unwrap();
    assert_eq!(sock::read_n(&mut s, 6).unwrap(), b"hello\n");

    // A node dies (its agent killed, nothing cleaned up): once its lease
    // ends, the other node's DNS and balancer drop its replica.
    t.a2.proc.signal(nix::sys::signal::Signal::SIGKILL);
    let died = Instant::now();
    wait_for(
        "n2's replica to leave n1's DNS",
        Duration::from_secs(15),
        || ask(&c1, "tasks.web").len() == 1,
    );
    println!(
        "a dead node's replica left the other node's DNS after {:?} (lease TTL 3s)",
        died.elapsed()
    );
    assert_eq!(
        replicas_seen(&c1, SocketAddr::new(vip.into(), 8000), 10),
        ["web.1".to_string()].into()
    );
    assert_eq!(t.a1.json(&["node", "ls"]).as_array().unwrap().len(), 1);
}

/// A replica on n2 whose check the test fails and passes at will (a
/// listener the test holds in the task's namespace); each round measures
/// from the moment the health change lands in etcd to the moment both
/// nodes have applied it (their balancer and DNS are updated in the same
/// reconcile, before the agent reports the revision applied).
#[test]
fn convergence_after_a_failed_check_is_measured() {
    let rounds: usize = std::env::var("SHOAL_CONVERGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let t = Two::start();
    t.a1.ok(&["network", "create", "front", "--subnet", "10.77.0.0/16"]);
    t.a1.ok(&[
        "service",
        "create",
        "probe",
        "--network",
        "front",
        "--port",
        "9000",
        "--health",
        "tcp",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "100ms",
        "--health-rise",
        "1",
        "--health-fall",
        "1",
    ]);
    let _task = t.a2.run(
        &t.dir,
        &[
            "--network",
            "front",
            "--service",
            "probe",
            "--name",
            "probe.1",
            "--",
            "sleep",
            "600",
        ],
    );
    let ns = t.task_ns(&t.n2, "probe.1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<Client> = [&t.a1, &t.a2]
        .iter()
        .map(|a| Client::new(a.api.parse::<ApiAddr>().unwrap(), None))
        .collect();
    // Attached (the agent has its pid only once `netd run` started it).
    let task: serde_json::Value = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(t) = clients[1]
                .call::<serde_json::Value>("GET", "/v1/tasks/probe.1", None::<&()>)
                .await
            {
                if !t["pid"].is_null() {
                    return t;
                }
            }
            assert!(Instant::now() < deadline, "the probe task never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let ip: Ipv4Addr = task["ip"].as_str().unwrap().parse().unwrap();
    let addr = SocketAddr::new(ip.into(), 9000);
    let _c1 = t.a1.sleeper(&t.dir, "front", "c1");
    let c1 = t.task_ns(&t.n1, "c1");

    let store: Arc<dyn Store> = rt.block_on(async {
        Arc::new(
            EtcdStore::connect(
                &[t.etcd.client_url().to_string()],
                "/shoal/",
                Duration::from_secs(2),
            )
            .await
            .unwrap(),
        )
    });

    let mut exclude = Vec::new();
    let mut include = Vec::new();
    let mut listener = Some(sock::listen(&ns, addr));
    wait_for("the probe to be healthy", Duration::from_secs(20), || {
        ask(&c1, "tasks.probe") == vec![ip]
    });
    for round in 0..rounds * 2 {
        let failing = round % 2 == 0;
        let want = if failing { "unhealthy" } else { "healthy" };
        let (took, rev) = rt.block_on(async {
            let (_, from) = store.range("ep/front/probe.1").await.unwrap();
            let mut w = store.watch("ep/front/probe.1", from + 1).await.unwrap();
            // Fail or pass the check.
            if failing {
                listener = None;
            } else {
                listener = Some(sock::listen(&ns, addr));
            }
            let (landed, rev) = loop {
                let item = tokio::time::timeout(Duration::from_secs(10), w.recv())
                    .await
                    .expect("the health change in time")
                    .expect("watch open");
                if let WatchItem::Events(evs) = item {
                    if let Some(Event::Put(e)) =
                        evs.iter().rev().find(|e| matches!(e, Event::Put(_)))
                    {
                        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
                        if v["state"] == want {
                            break (Instant::now(), e.mod_revision);
                        }
                    }
                }
            };
            // Both nodes applied it.
            for c in &clients {
                loop {
                    let info: serde_json::Value =
                        c.call("GET", "/v1/info", None::<&()>).await.unwrap();
                    if info["applied_revision"].as_i64().unwrap_or(0) >= rev {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (landed.elapsed(), rev)
        });
        // And it is true of DNS, seen from a container on the other node.
        let expect: Vec<Ipv4Addr> = if failing { vec![] } else { vec![ip] };
        assert_eq!(
            ask(&c1, "tasks.probe"),
            expect,
            "round {round} (revision {rev})"
        );
        if failing {
            exclude.push(took);
        } else {
            include.push(took);
        }
    }
    drop(listener);
    let report = |what: &str, v: &mut Vec<Duration>| {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        println!(
            "convergence ({what}, {} rounds, both nodes applied after the change landed in etcd): p50 {:?}, p99 {:?}, max {:?}",
            v.len(),
            p(0.5),
            p(0.99),
            v[v.len() - 1]
        );
    };
    report("replica excluded", &mut exclude);
    report("replica included again", &mut include);
}
