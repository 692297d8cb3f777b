//! Scenario 8, second variant: one node cut off from its peers but not
//! from etcd (blackhole routes between the node and every other node; the
//! store stays reachable). Both sides allocate through the same store at
//! the same time: tasks, services (VIPs) and new replica slots. After
//! healing, no address or VIP is held twice, in the store or the kernel.

use std::net::Ipv4Addr;
use std::time::Duration;

use shoal_tests::cmd::ip_in;
use shoal_tests::Cluster;

use crate::common::{
    assert_each_address_once, busiest, deploy_web, lb_addresses, ps, serial, start, vip, NET,
};

/// Adds (or removes) blackhole routes between node `p` and `others`.
fn isolate(c: &Cluster, p: usize, others: &[usize], on: bool) {
    let verb = if on { "add" } else { "del" };
    for q in others {
        let (pn, qn) = (c.node(p), c.node(*q));
        ip_in(
            &pn.name,
            &["route", verb, "blackhole", &format!("{}/32", qn.ip)],
        );
        ip_in(
            &qn.name,
            &["route", verb, "blackhole", &format!("{}/32", pn.ip)],
        );
    }
}

#[test]
fn s8b_node_cut_from_peers_but_not_from_etcd_allocates_nothing_twice() {
    let _one = serial();
    let c = start();
    let (_, tasks) = deploy_web(&c, 4);
    let p = busiest(&c, &tasks);
    let others: Vec<usize> = (0..3).filter(|i| *i != p).collect();
    isolate(&c, p, &others, true);
    println!(
        "{} cut from its peers; etcd still reachable",
        c.node(p).name
    );

    // Both sides allocate at once through the shared store.
    let cwd = c.dir().to_path_buf();
    let _a = c.run(
        p,
        &cwd,
        &["--network", NET, "--name", "side-p", "--", "sleep", "300"],
    );
    let _b = c.run(
        others[0],
        &cwd,
        &["--network", NET, "--name", "side-m", "--", "sleep", "300"],
    );
    c.ok(
        p,
        &[
            "service",
            "create",
            "api-p",
            "--network",
            NET,
            "--port",
            "9000",
        ],
    );
    c.ok(
        others[0],
        &[
            "service",
            "create",
            "api-m",
            "--network",
            NET,
            "--port",
            "9000",
        ],
    );
    c.ok(p, &["service", "scale", "web=6"]);
    c.wait_healthy(p, "web", 6, Duration::from_secs(60));
    println!(
        "during the cut: side-p, side-m, api-p, api-m created and web scaled to 6 from both sides"
    );

    isolate(&c, p, &others, false);
    c.wait_converged(Duration::from_secs(30));

    let web = ps(&c, others[0], "web");
    let mut held: Vec<(String, Ipv4Addr)> = web.iter().map(|t| (t.name.clone(), t.ip)).collect();
    for side in ["side-p", "side-m"] {
        let ips = c.dns(others[0], NET, side).unwrap_or_default();
        assert_eq!(ips.len(), 1, "{side} in DNS");
        held.push((side.to_string(), ips[0]));
    }
    for svc in ["web", "api-p", "api-m"] {
        held.push((format!("VIP {svc}"), vip(&c, others[0], svc)));
    }
    held.extend(lb_addresses(&c.json(others[0], &["node", "ls"])));
    assert_each_address_once(&c, &held);
    println!(
        "after healing: {} addresses held (6 replicas, 2 containers, 3 VIPs, 3 lb addresses), none twice",
        held.len()
    );
}
