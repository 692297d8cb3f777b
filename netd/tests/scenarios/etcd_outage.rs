//! Scenario 6, all of etcd down for 30 s (every member SIGKILLed), then
//! back: request loops through every node's published port see no failure
//! throughout, every node's DNS keeps answering, client commands fail
//! cleanly meanwhile; afterwards no address, VNI, subnet or VIP was lost
//! or reassigned (the cluster's JSON before and after is the same), and a
//! change made after the return applies on every node.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::{wait_for, Stop};
use shoal_tests::Cluster;

use crate::common::{deploy_web, mesh_traffic, ms, serial, start, NET};

/// Everything allocated, as the client commands show it (lists sorted).
fn allocations(c: &Cluster, i: usize) -> Value {
    let sorted = |mut v: Value, key: &str| {
        if let Some(a) = v.as_array_mut() {
            a.sort_by(|x, y| x[key].as_str().cmp(&y[key].as_str()));
        }
        v
    };
    serde_json::json!({
        "network": c.json(i, &["network", "inspect", NET]),
        "service": c.json(i, &["service", "inspect", "web"]),
        "tasks": sorted(c.json(i, &["service", "ps", "web"]), "name"),
        "nodes": sorted(c.json(i, &["node", "ls"]), "name"),
    })
}

#[test]
fn s6_all_of_etcd_down_for_30s_traffic_flows_and_nothing_is_reassigned() {
    let _one = serial();
    let mut c = start();
    let (_, tasks) = deploy_web(&c, 4);
    let before = allocations(&c, 0);
    let ips: Vec<_> = {
        let mut v: Vec<_> = tasks.iter().map(|t| t.ip).collect();
        v.sort();
        v
    };
    let loops: Vec<_> = (0..3)
        .map(|i| mesh_traffic(&c, i, Duration::from_secs(120)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let down = Instant::now();
    for j in 0..3 {
        c.stop_etcd(j, Stop::Kill);
    }
    println!("all three etcd members killed");
    // A client command fails, with a message naming the store.
    let t = Instant::now();
    let out = c.netd(0, &["service", "scale", "web=5"]);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    println!(
        "`netd service scale` meanwhile: exit {:?} after {}: {err}",
        out.status.code(),
        ms(t.elapsed())
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("store unavailable"), "{err}");
    // DNS keeps answering on every node while etcd is away.
    while down.elapsed() < Duration::from_secs(30) {
        for i in 0..3 {
            assert_eq!(
                c.dns(i, NET, "tasks.web").as_deref(),
                Some(&ips[..]),
                "node {i}'s DNS at {}",
                ms(down.elapsed())
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    let back = Instant::now();
    for j in 0..3 {
        c.start_etcd(j);
    }
    let (_, elected) = c.wait_etcd_ready(Duration::from_secs(30));
    wait_for(
        "a client command to work again",
        Duration::from_secs(30),
        || c.netd(0, &["node", "ls"]).status.success(),
    );
    let works = back.elapsed();
    println!(
        "etcd restarted after {} down: a leader after {}, client commands work after {}",
        ms(back - down),
        ms(elected),
        ms(works)
    );
    c.wait_converged(Duration::from_secs(30));
    let after = allocations(&c, 0);
    assert_eq!(
        before, after,
        "allocations changed across the outage:\nbefore {before:#}\nafter {after:#}"
    );
    for i in 1..3 {
        assert_eq!(allocations(&c, i), after, "node {i}'s view");
    }
    println!("networks, VIPs, task addresses and node lb addresses: identical before and after, on every node");

    // A change after the return applies on every node.
    let t = Instant::now();
    c.ok(1, &["service", "scale", "web=5"]);
    let five = c.wait_healthy(2, "web", 5, Duration::from_secs(30));
    c.wait_converged(Duration::from_secs(30));
    for i in 0..3 {
        assert_eq!(
            c.dns(i, NET, "tasks.web").map(|v| v.len()),
            Some(5),
            "node {i}'s DNS"
        );
        let backends = c.balanced(i).unwrap_or_default();
        for t in &five {
            let ip = t["ip"].as_str().unwrap();
            assert!(
                backends
                    .iter()
                    .any(|(_, b)| b.starts_with(&format!("{ip}:"))),
                "node {i} does not balance to {ip}"
            );
        }
    }
    println!(
        "`service scale web=5` after the return: in every node's DNS and balancer after {}",
        ms(t.elapsed())
    );

    std::thread::sleep(Duration::from_millis(500));
    for l in loops {
        let r = l.stop();
        println!("{}", r.summary());
        assert!(
            r.failures().is_empty(),
            "failed requests: {:?}",
            r.failures().iter().map(|s| &s.result).collect::<Vec<_>>()
        );
        let during = r
            .samples
            .iter()
            .filter(|s| s.at >= down && s.at < back)
            .count();
        println!("  {during} of them while etcd was down");
        assert!(during > 0);
    }
}
