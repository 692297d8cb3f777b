//! Scenario 2, a replica crash under load: `web` (four replicas of
//! `web.py` behind an HTTP-mode published port) takes keep-alive request
//! loops through every node's published port and through the VIP from a
//! container; one replica's process is SIGKILLed. No request may fail (the
//! balancers retry the idempotent GETs that met the dead replica on
//! another), the replica must leave every node's balancer and DNS, and its
//! restart by the scheduler must take traffic again.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{netns_ready, wait_for, Traffic};

use crate::common::{ms, ps, serial, start, NET, TARGET};
use crate::http_web::{assert_no_failure, backends, counter, deploy, keep_alive, task_of, PAUSE};

/// SIGKILLs every process in namespace `ns`; returns their pids.
fn crash(ns: &str) -> Vec<i32> {
    let out = shoal_tests::cmd::output("ip", &["netns", "pids", ns]);
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for p in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids
}

#[test]
fn s2_replica_crash_under_keep_alive_load_fails_no_request() {
    let _one = serial();
    let c = start();
    let (vip, tasks) = deploy(&c, 4, "v1");
    // A client container on node 0, to go through the VIP.
    let _client = c.run(
        0,
        c.dir(),
        &["--network", NET, "--name", "client", "--", "sleep", "120"],
    );
    let client_ns = c.task_ns(0, "client");
    wait_for("the client container", Duration::from_secs(30), || {
        netns_ready(&client_ns) && c.dns(0, NET, "client").is_some_and(|v| v.len() == 1)
    });

    let limit = Duration::from_secs(90);
    let mut loops: Vec<Traffic> = (0..3).map(|i| keep_alive(&c, i, limit)).collect();
    loops.push(Traffic::keep_alive(
        &client_ns,
        SocketAddr::new(vip.into(), TARGET),
        "/",
        PAUSE,
        limit,
    ));
    let everyone: BTreeSet<String> = tasks.iter().map(|t| t.name.clone()).collect();
    wait_for(
        "the loops to reach all four",
        Duration::from_secs(20),
        || {
            loops.iter().all(|l| {
                let seen: BTreeSet<String> = l
                    .samples()
                    .iter()
                    .filter_map(|s| s.result.as_deref().ok().map(|a| task_of(a).to_string()))
                    .collect();
                seen == everyone
            })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let retries_before: u64 = (0..3)
        .map(|i| counter(&c, i, "shoal_lb_http_retries_total"))
        .sum();

    // The victim: a replica on a node other than node 0's (so the crash is
    // remote for two balancers and local for one).
    let victim = tasks
        .iter()
        .find(|t| t.node != c.node(0).name)
        .expect("a replica off node 0")
        .clone();
    let vi = c.node_index(&victim.node).unwrap();
    let backend = format!("{}:{TARGET}", victim.ip);
    let killed = Instant::now();
    let pids = crash(&c.task_ns(vi, &victim.name));
    assert!(
        !pids.is_empty(),
        "no process in {}'s namespace",
        victim.name
    );
    println!(
        "SIGKILLed {} ({} on {}, pids {pids:?})",
        victim.name, victim.ip, victim.node
    );

    // When each node stopped routing to it (its balancer listeners) and
    // stopped naming it (`tasks.web`).
    let mut lb_gone: Vec<Option<Duration>> = vec![None; 3];
    let mut dns_gone: Vec<Option<Duration>> = vec![None; 3];
    while killed.elapsed() < Duration::from_secs(30)
        && (lb_gone.iter().any(Option::is_none) || dns_gone.iter().any(Option::is_none))
    {
        for i in 0..3 {
            if lb_gone[i].is_none() {
                let now = killed.elapsed();
                if backends(&c, i, "").is_some_and(|b| !b.contains(&backend)) {
                    lb_gone[i] = Some(now);
                }
            }
            if dns_gone[i].is_none() {
                let now = killed.elapsed();
                if c.dns(i, NET, "tasks.web")
                    .is_some_and(|ips| !ips.contains(&victim.ip))
                {
                    dns_gone[i] = Some(now);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..3 {
        let name = &c.node(i).name;
        let l = lb_gone[i].unwrap_or_else(|| panic!("{name}'s balancer still routes to {backend}"));
        let d = dns_gone[i].unwrap_or_else(|| panic!("{name}'s DNS still names {}", victim.ip));
        println!(
            "{name}: the crashed replica left its balancer after {}, its DNS after {}",
            ms(l),
            ms(d)
        );
    }
    let unrouted = lb_gone.iter().flatten().max().copied().unwrap_or_default();
    println!(
        "no node routes to the crashed replica {} after the kill",
        ms(unrouted)
    );

    // The scheduler restarts it (same task name); it takes traffic again.
    let back = c.wait_healthy(0, "web", 4, Duration::from_secs(30));
    let healthy = killed.elapsed();
    let now = crate::common::tasks(&back);
    let replacement = now.iter().find(|t| t.name == victim.name).unwrap();
    println!(
        "{} restarted and healthy {} after the kill (address {}, before {})",
        replacement.name,
        ms(healthy),
        replacement.ip,
        victim.ip
    );
    let settled = killed + healthy;
    let reached = wait_for(
        "every loop to reach the restarted replica",
        Duration::from_secs(20),
        || {
            loops.iter().all(|l| {
                l.samples().iter().any(|s| {
                    s.at >= settled && s.result.as_deref().is_ok_and(|a| task_of(a) == victim.name)
                })
            })
        },
    );
    println!(
        "every loop reached the restarted replica {} after it was healthy",
        ms(reached)
    );

    let retries: u64 = (0..3)
        .map(|i| counter(&c, i, "shoal_lb_http_retries_total"))
        .sum::<u64>()
        - retries_before;
    let denied: u64 = (0..3)
        .map(|i| counter(&c, i, "shoal_lb_http_retries_denied_total"))
        .sum();
    println!(
        "the balancers retried {retries} request(s) on another replica ({denied} retries denied)"
    );
    let window = killed..killed + unrouted;
    for l in loops {
        let r = l.stop();
        assert_no_failure(&r);
        let during: Vec<_> = r
            .samples
            .iter()
            .filter(|s| window.contains(&s.at))
            .collect();
        println!(
            "  of which sent between the kill and the last balancer's exclusion: {}, slowest {}",
            during.len(),
            ms(during.iter().map(|s| s.took).max().unwrap_or_default())
        );
        assert!(
            r.connections() < r.samples.len() / 10,
            "{}: the client did not keep its connections alive",
            r.what
        );
    }
    assert_eq!(ps(&c, 1, "web").len(), 4);
}
