//! Scenario 9, scale: 200 services of 5 replicas each (1000 replicas, each
//! a task namespace of its own) deployed over three nodes with
//! `netd service create`, one after another. Each replica is a real server,
//! `busybox httpd` (about 120 kB of its own memory) answering with its task
//! name, on the service's VIP port 8000 (TCP mode, no active check: a
//! replica is healthy once its port accepts).
//!
//! Measured: the time to create the services, then until every node runs
//! all its replicas, and until every node's balancer has the five healthy
//! replicas of every service; each agent's memory (VmRSS) before and after;
//! then checked on every node for every service: `NAME` resolves to its
//! VIP, `tasks.NAME` to the five addresses `service ps` shows, the
//! balancer's VIP listener has exactly those five backends; and requests
//! through a few services' VIPs reach all five of their replicas.
//!
//! `SHOAL_SCALE_SERVICES` sets the number of services (default 200).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_tests::cluster::{http, netns_ready, wait_for, wait_until};
use shoal_tests::Cluster;

use crate::common::{ms, serial, start, tasks, NET, SUBNET, TARGET};
use crate::http_web::counter;

/// Replicas per service.
const REPLICAS: usize = 5;
/// How many services, unless `SHOAL_SCALE_SERVICES` says otherwise.
const SERVICES: usize = 200;
/// Services whose VIP is exercised with requests.
const SAMPLED: usize = 5;

fn services() -> usize {
    std::env::var("SHOAL_SCALE_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SERVICES)
}

fn name(k: usize) -> String {
    format!("s{k:03}")
}

/// A `www` directory with `cgi-bin/name`, which answers the hostname (the
/// task name).
fn www(c: &Cluster) -> String {
    let dir = c.dir().join("www");
    std::fs::create_dir_all(dir.join("cgi-bin")).unwrap();
    let script = dir.join("cgi-bin/name");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n",
    )
    .unwrap();
    let mut p = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&script, p).unwrap();
    dir.display().to_string()
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Backends per VIP listener of node `i` (`None` if it does not answer).
fn vip_backends(c: &Cluster, i: usize) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (l, b) in c.balanced(i)? {
        if let Some(svc) = l.strip_prefix("vip/").and_then(|r| r.split('/').next()) {
            m.entry(svc.to_string()).or_default().insert(b);
        }
    }
    Some(m)
}

#[test]
fn s9_scale_200_services_of_5_replicas_converge_and_answer_right() {
    let _one = serial();
    let mut c = start();
    let n = services();
    let total = n * REPLICAS;
    let www = www(&c);
    c.ok(0, &["network", "create", NET, "--subnet", SUBNET]);
    let idle: Vec<f64> = (0..3).map(|i| rss_mib(c.agent_pid(i))).collect();

    // Deploy: the services created one after another, through the nodes
    // in turn.
    let t0 = Instant::now();
    let port = TARGET.to_string();
    let replicas = REPLICAS.to_string();
    for k in 0..n {
        let svc = name(k);
        c.ok(
            k % 3,
            &[
                "service",
                "create",
                &svc,
                "--network",
                NET,
                "--port",
                &port,
                "--replicas",
                &replicas,
                "--",
                "busybox",
                "httpd",
                "-f",
                "-p",
                &port,
                "-h",
                &www,
            ],
        );
    }
    let created = t0.elapsed();
    println!(
        "created {n} services of {REPLICAS} replicas in {} ({:.1} ms each)",
        ms(created),
        created.as_secs_f64() * 1000.0 / n as f64
    );

    // Every replica started somewhere.
    let mut last = 0;
    let limit = Duration::from_secs(600);
    let mut shown = Instant::now();
    let started = wait_until(limit, || {
        let per: Vec<u64> = (0..3).map(|i| counter_plain(&c, i, "netd_tasks")).collect();
        last = per.iter().sum::<u64>() as usize;
        if shown.elapsed() >= Duration::from_secs(10) {
            shown = Instant::now();
            let took: Vec<String> = (0..3)
                .map(|i| format!("{:.0} ms", gauge(&c, i, "netd_reconcile_last_seconds") * 1000.0))
                .collect();
            println!(
                "  {}: {last} replicas started (per node {per:?}); last reconcile per node {took:?}",
                ms(t0.elapsed())
            );
        }
        last == total
    })
    .unwrap_or_else(|| panic!("only {last} of {total} replicas started"));
    println!(
        "all {total} replicas started {} after the first create",
        ms(created + started)
    );
    // Every node balances over the five healthy replicas of every service.
    let mut short: Vec<usize> = vec![n; 3];
    let balanced = wait_until(limit, || {
        for (i, s) in short.iter_mut().enumerate() {
            *s = vip_backends(&c, i).map_or(n, |m| {
                (0..n)
                    .filter(|k| m.get(&name(*k)).map(BTreeSet::len) != Some(REPLICAS))
                    .count()
            });
        }
        short.iter().all(|s| *s == 0)
    });
    let converged = t0.elapsed();
    assert!(
        balanced.is_some(),
        "services without their {REPLICAS} backends, per node: {short:?}"
    );
    c.wait_converged(Duration::from_secs(60));
    println!(
        "converged: every node balances over the {total} healthy replicas {} after the first create ({} after the last)",
        ms(converged),
        ms(converged.saturating_sub(created))
    );

    // Memory.
    let busy: Vec<f64> = (0..3).map(|i| rss_mib(c.agent_pid(i))).collect();
    let lbs: Vec<BTreeMap<String, BTreeSet<String>>> = (0..3)
        .map(|i| vip_backends(&c, i).expect("metrics"))
        .collect();
    for i in 0..3 {
        let local = counter_plain(&c, i, "netd_tasks");
        println!(
            "{}: netd VmRSS {:.1} MiB idle, {:.1} MiB with {local} local replicas, {} VIP listeners and {} backends in its balancer",
            c.node(i).name,
            idle[i],
            busy[i],
            lbs[i].len(),
            lbs[i].values().map(BTreeSet::len).sum::<usize>()
        );
    }

    // Every service, on every node: DNS and the balancer agree with
    // `service ps`.
    let t = Instant::now();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for k in 0..n {
        let svc = name(k);
        let ts = tasks(c.json(k % 3, &["service", "ps", &svc]).as_array().unwrap());
        for t in &ts {
            *per_node.entry(t.node.clone()).or_default() += 1;
        }
        let ips: Vec<Ipv4Addr> = {
            let mut v: Vec<Ipv4Addr> = ts.iter().map(|t| t.ip).collect();
            v.sort();
            v
        };
        let backends: BTreeSet<String> = ips.iter().map(|ip| format!("{ip}:{TARGET}")).collect();
        let vip = crate::common::vip(&c, k % 3, &svc);
        if ts.len() != REPLICAS || ts.iter().any(|t| t.state != "healthy") {
            wrong.push(format!("{svc}: service ps {ts:?}"));
        }
        for (i, lb) in lbs.iter().enumerate() {
            if c.dns(i, NET, &svc) != Some(vec![vip]) {
                wrong.push(format!(
                    "{svc} in node {i}'s DNS: {:?}",
                    c.dns(i, NET, &svc)
                ));
            }
            let tn = format!("tasks.{svc}");
            if c.dns(i, NET, &tn).as_ref() != Some(&ips) {
                wrong.push(format!("{tn} in node {i}'s DNS: {:?}", c.dns(i, NET, &tn)));
            }
            if lb.get(&svc) != Some(&backends) {
                wrong.push(format!("{svc} in node {i}'s balancer: {:?}", lb.get(&svc)));
            }
        }
    }
    println!(
        "checked {n} services on 3 nodes ({} DNS answers, {} balancer listeners) in {}: {} wrong; replicas per node {per_node:?}",
        n * 3 * 2,
        n * 3,
        ms(t.elapsed()),
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong answers: {wrong:#?}");

    // Requests through a few VIPs, from a container on node 0.
    let _client = c.run(
        0,
        c.dir(),
        &["--network", NET, "--name", "client", "--", "sleep", "120"],
    );
    let client_ns = c.task_ns(0, "client");
    wait_for("the client container", Duration::from_secs(30), || {
        netns_ready(&client_ns) && c.dns(0, NET, "client").is_some_and(|v| v.len() == 1)
    });
    for k in (0..n).step_by((n / SAMPLED).max(1)).take(SAMPLED) {
        let svc = name(k);
        let vip = crate::common::vip(&c, 0, &svc);
        let want: BTreeSet<String> = tasks(c.json(0, &["service", "ps", &svc]).as_array().unwrap())
            .into_iter()
            .map(|t| t.name)
            .collect();
        let to = SocketAddr::new(vip.into(), TARGET);
        let seen: BTreeSet<String> = (0..REPLICAS * 3)
            .map(|_| {
                http::get_in(&client_ns, to, "/cgi-bin/name")
                    .unwrap_or_else(|e| panic!("GET {to} ({svc}): {e}"))
                    .trim()
                    .to_string()
            })
            .collect();
        println!(
            "{svc} via its VIP {vip}: {} requests answered by {seen:?}",
            REPLICAS * 3
        );
        assert_eq!(seen, want, "{svc}'s VIP reaches its replicas");
    }
    let none: u64 = (0..3)
        .map(|i| counter(&c, i, "shoal_lb_listener_no_backend_total"))
        .sum();
    assert_eq!(none, 0, "connections found no backend");
}

/// An unlabelled metric of node `i` (0 if absent).
fn counter_plain(c: &Cluster, i: usize, name: &str) -> u64 {
    c.metrics(i)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// An unlabelled gauge of node `i` (0 if absent).
fn gauge(c: &Cluster, i: usize, name: &str) -> f64 {
    c.metrics(i)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
