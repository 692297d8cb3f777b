//! Scenario 1, deploy: `web` (four netd-run replicas spread over three
//! nodes, published on 8080) is reached from a container on every node by
//! its name (the VIP), its `tasks.` name (every replica), each task's name,
//! and through the VIP; and every node's published port reaches every
//! replica, from every node.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use shoal_tests::cluster::{http, netns_ready, wait_for};
use shoal_tests::dns::query_a;

use crate::common::{deploy_web, ms, serial, start, NET, PUBLISHED, TARGET};

fn ask(ns: &str, gateway: Ipv4Addr, name: &str) -> Vec<Ipv4Addr> {
    let mut ips = query_a(ns, SocketAddr::new(gateway.into(), 53), name).1;
    ips.sort();
    ips
}

/// Which answers `n` requests from `ns` to `to` got (all must succeed).
fn answers(ns: &str, to: SocketAddr, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| http::get_in(ns, to, "/").unwrap_or_else(|e| panic!("GET {to} from {ns}: {e}")))
        .collect()
}

#[test]
fn s1_deploy_names_vip_and_published_port_work_on_every_node() {
    let _one = serial();
    let c = start();
    let (vip, tasks) = deploy_web(&c, 4);
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "four replicas spread over all three nodes");
    let all: BTreeSet<String> = tasks.iter().map(|t| t.answer()).collect();
    let ips: Vec<Ipv4Addr> = {
        let mut v: Vec<Ipv4Addr> = tasks.iter().map(|t| t.ip).collect();
        v.sort();
        v
    };
    let gateway: Ipv4Addr = c.json(0, &["network", "inspect", NET])["gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A client container on each node.
    let _clients: Vec<_> = (0..3)
        .map(|i| {
            let name = format!("client{}", i + 1);
            c.run(
                i,
                c.dir(),
                &["--network", NET, "--name", &name, "--", "sleep", "120"],
            )
        })
        .collect();
    let client_ns: Vec<String> = (0..3)
        .map(|i| c.task_ns(i, &format!("client{}", i + 1)))
        .collect();
    for (i, ns) in client_ns.iter().enumerate() {
        let took = wait_for("the client container", Duration::from_secs(30), || {
            c.dns(i, NET, &format!("client{}", i + 1))
                .is_some_and(|v| v.len() == 1)
                && netns_ready(ns)
        });
        println!("{ns}: attached after {}", ms(took));
    }
    for (i, ns) in client_ns.iter().enumerate() {
        // Names.
        assert_eq!(ask(ns, gateway, "web"), [vip], "`web` from node {i}");
        assert_eq!(
            ask(ns, gateway, "tasks.web"),
            ips,
            "`tasks.web` from node {i}"
        );
        for t in &tasks {
            assert_eq!(
                ask(ns, gateway, &t.name),
                [t.ip],
                "`{}` from node {i}",
                t.name
            );
        }
        // The VIP reaches every replica, wherever it runs.
        let seen = answers(ns, SocketAddr::new(vip.into(), TARGET), 24);
        assert_eq!(seen, all, "the VIP from node {i}");
        // So does a replica's own address, across nodes.
        for t in &tasks {
            let got = http::get_in(ns, SocketAddr::new(t.ip.into(), TARGET), "/")
                .unwrap_or_else(|e| panic!("{} from node {i}: {e}", t.name));
            assert_eq!(got, t.answer());
        }
    }
    println!(
        "from a container on each node: `web` = {vip}, `tasks.web` = {ips:?}, every task name, the VIP and every replica's address answer"
    );

    // The routing mesh: every node's published port, from every node.
    for (i, from) in c.nodes().iter().enumerate() {
        for (j, to) in c.nodes().iter().enumerate() {
            let seen = answers(&from.name, SocketAddr::new(to.ip.into(), PUBLISHED), 24);
            assert_eq!(seen, all, "node {j}'s published port from node {i}");
        }
    }
    println!("every node's published port {PUBLISHED} reaches all four replicas from every node (9 paths x 24 requests)");
}
