//! The `netd` binary as a user meets it, on one node with the embedded
//! store: the four commands as written, then names, the VIP and the
//! published port across three replicas, a killed replica leaving, and a
//! restart that changes nothing in the kernel and keeps an established
//! container-to-container flow.

mod support;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use shoal_tests::sock;
use support::{http_replica, replicas_seen, wait_for, AgentNode};

fn ask(ns: &str, name: &str) -> (u8, Vec<Ipv4Addr>) {
    shoal_tests::dns::query_a(ns, "10.77.0.1:53".parse().unwrap(), name)
}

#[test]
fn a_service_on_one_node_from_create_to_restart() {
    let t = AgentNode::start();
    let a = &t.agent;
    // The commands, as written.
    a.ok(&["network", "create", "front", "--subnet", "10.77.0.0/24"]);
    a.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--publish",
        "8080:8000",
        "--policy",
        "least-conn",
        "--health",
        "tcp",
    ]);
    let _r1 = http_replica(&t.agent, &t.dir, "front", "web", "web.1");
    let _r2 = http_replica(&t.agent, &t.dir, "front", "web", "web.2");
    let mut r3 = http_replica(&t.agent, &t.dir, "front", "web", "web.3");
    let tasks = a.wait_healthy("web", 3);
    let ips: Vec<Ipv4Addr> = tasks
        .iter()
        .map(|t| t["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ips.iter().all(|ip| "10.77.0.0/24"
        .parse::<ipnet::Ipv4Net>()
        .unwrap()
        .contains(ip)));
    let vip = a.vip("web", "front");

    // A client container on the same network.
    let _client = a.sleeper(&t.dir, "front", "client");
    let client_ns = t.task_ns("client");
    wait_for("the client task", Duration::from_secs(20), || {
        std::path::Path::new("/run/netns").join(&client_ns).exists()
            && ask(&client_ns, "web").0 == 0
    });

    // Names: the service is its VIP, tasks.web the three replicas.
    assert_eq!(ask(&client_ns, "web"), (0, vec![vip]));
    let mut task_ips = ask(&client_ns, "tasks.web").1;
    task_ips.sort();
    let mut want = ips.clone();
    want.sort();
    assert_eq!(task_ips, want);
    assert_eq!(ask(&client_ns, "web.2").1.len(), 1);

    // The VIP and the published port reach every replica.
    let seen = |to: SocketAddr, ns: &str| replicas_seen(ns, to, 30);
    let all: std::collections::BTreeSet<String> = ["web.1", "web.2", "web.3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(seen(SocketAddr::new(vip.into(), 8000), &client_ns), all);
    assert_eq!(seen("198.18.0.1:8080".parse().unwrap(), &t.node), all);

    // A replica's process dies: it leaves DNS and balancing.
    let ns3 = t.task_ns("web.3");
    let pids = shoal_tests::cmd::run("ip", &["netns", "pids", &ns3]);
    for pid in pids.split_whitespace() {
        shoal_tests::cmd::run("kill", &["-9", pid]);
    }
    let took = wait_for("web.3 to leave DNS", Duration::from_secs(10), || {
        ask(&client_ns, "tasks.web").1.len() == 2
    });
    println!("killed replica left DNS after {took:?}");
    let _ = r3.stop(Duration::from_secs(5));
    let left = seen(SocketAddr::new(vip.into(), 8000), &client_ns);
    assert!(!left.contains("web.3") && left.len() == 2, "{left:?}");
    assert_eq!(
        a.json(&["service", "ps", "web"]).as_array().unwrap().len(),
        2
    );
    wait_for("web.3's namespace to go", Duration::from_secs(10), || {
        !std::path::Path::new("/run/netns").join(&ns3).exists()
    });

    // An established container-to-container flow, through the overlay.
    let _peer = a.sleeper(&t.dir, "front", "peer");
    let peer_ns = t.task_ns("peer");
    wait_for("the peer task", Duration::from_secs(20), || {
        ask(&client_ns, "peer").1.len() == 1
    });
    let peer_ip = ask(&client_ns, "peer").1[0];
    let listener = sock::listen(&peer_ns, SocketAddr::new(peer_ip.into(), 9000));
    let _echo = sock::serve_echo(listener, "hello\n");
    let mut flow = sock::connect(&client_ns, SocketAddr::new(peer_ip.into(), 9000), None).unwrap();
    flow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = [0u8; 6];
    flow.read_exact(&mut hello).unwrap();
    sock::echo(&mut flow, b"before").unwrap();

    // Restart the agent: nothing changes in the kernel, the flow lives.
    let watched = [
        t.node.clone(),
        format!("shoal.{}.front", t.node),
        client_ns.clone(),
        t.task_ns("web.1"),
        peer_ns.clone(),
    ];
    let before: Vec<String> = watched
        .iter()
        .map(|n| shoal_tests::snapshot::of(n))
        .collect();
    let ps_before = a.json(&["service", "ps", "web"]);
    let mut t = t;
    t.agent.restart();
    let a = &t.agent;
    wait_for(
        "the restarted agent to apply",
        Duration::from_secs(20),
        || {
            let info: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
                &a.netd(&["node", "ls", "--format", "json"]).stdout,
            ))
            .unwrap_or_default();
            info.as_array().is_some_and(|n| !n.is_empty())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<String> = watched
        .iter()
        .map(|n| shoal_tests::snapshot::of(n))
        .collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            b, a,
            "kernel state of {} changed across a restart",
            watched[i]
        );
    }
    assert_eq!(a.json(&["service", "ps", "web"]), ps_before);
    sock::echo(&mut flow, b"after").unwrap();
    assert_eq!(seen(SocketAddr::new(vip.into(), 8000), &client_ns).len(), 2);
}

#[test]
fn bad_input_is_refused_with_the_field_named_and_nothing_changed() {
    let t = AgentNode::start();
    let a = &t.agent;
    a.ok(&["network", "create", "front", "--subnet", "10.77.0.0/24"]);
    let out = a.netd(&["network", "create", "back", "--subnet", "10.77.0.0/16"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("overlaps") && err.contains("front"), "{err}");
    let out = a.netd(&[
        "service",
        "create",
        "web",
        "--network",
        "nope",
        "--port",
        "80",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    assert_ne!(out.status.code(), Some(0));
    let out = a.netd(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--policy",
        "fastest",
    ]);
    assert_eq!(out.status.code(), Some(2), "a bad policy is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fastest"));
    let out = a.netd(&["run", "--network", "ghost", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    // Nothing was half-made.
    let nets = a.json(&["network", "ls"]);
    assert_eq!(nets.as_array().unwrap().len(), 1);
    assert!(a.json(&["service", "ls"]).as_array().unwrap().is_empty());
    // The agent is not there: a clear message, exit 1.
    let out = std::process::Command::new(support::NETD)
        .args(["--api", "unix:///nonexistent/netd.sock", "node", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("netd agent"));
}

#[test]
fn a_published_port_taken_on_the_host_holds_back_nothing_else() {
    let t = AgentNode::start();
    let a = &t.agent;
    // Some other program holds 198.18.0.1:8081 on this node's host.
    let squatter = sock::listen(&t.node, "198.18.0.1:8081".parse().unwrap());
    a.ok(&["network", "create", "front", "--subnet", "10.77.0.0/24"]);
    a.ok(&[
        "service",
        "create",
        "a",
        "--network",
        "front",
        "--publish",
        "8081:8000",
    ]);
    a.ok(&[
        "service",
        "create",
        "b",
        "--network",
        "front",
        "--publish",
        "8082:8000",
    ]);
    // b's port is served although a's cannot be.
    wait_for("b's published port", Duration::from_secs(10), || {
        sock::connect(&t.node, "198.18.0.1:8082".parse().unwrap(), None).is_ok()
    });
    // Once the port is free, a's listener takes it without any change.
    drop(squatter);
    wait_for("a's published port", Duration::from_secs(10), || {
        sock::connect(&t.node, "198.18.0.1:8081".parse().unwrap(), None).is_ok()
    });
}
