//! Scenario 7, netd restarted on one node under load, the graceful way: a
//! second agent started on the node's state directory takes the listening
//! sockets over (balancer, DNS, API) and the first drains and exits 0.
//! Keep-alive and one-request-per-connection loops through that node's
//! published port and its VIP listener, loops through the other nodes, and
//! DNS queries to its DNS server run throughout: none may fail. Afterwards
//! the whole state is what it was: the kernel state of the node, its
//! sandbox and every task namespace on it (links with their indexes,
//! addresses, neighbours, FDB, routes), the listening sockets, the lab's
//! namespaces, the replicas' processes, every node's DNS answers and
//! balancer backends, and `service ps`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::{http, netns_ready, wait_for, Traffic};
use shoal_tests::Cluster;

use crate::common::{busiest, ms, ps, serial, start, NET, TARGET};
use crate::http_web::{assert_no_failure, deploy, keep_alive, one_per_connection, PAUSE};

/// Everything that must not change, as named text.
fn state(c: &Cluster, r: usize, names: &[String]) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let node = c.node(r).name.clone();
    let sandbox = c.sandbox(r, NET);
    let tasks: Vec<Value> = {
        let socket = PathBuf::from(c.api(r).trim_start_matches("unix://"));
        let a = http::request_unix(&socket, "GET", "/v1/tasks").expect("GET /v1/tasks");
        serde_json::from_str(&a.body).expect("tasks JSON")
    };
    for ns in [&node, &sandbox] {
        s.insert(format!("kernel {ns}"), shoal_tests::snapshot::of(ns));
        s.insert(
            format!("listening sockets in {ns}"),
            shoal_tests::cmd::exec_in(ns, "ss", &["-Htlnu"]),
        );
    }
    for t in &tasks {
        let ns = t["netns"].as_str().expect("a task namespace");
        s.insert(format!("kernel {ns}"), shoal_tests::snapshot::of(ns));
        let pids = shoal_tests::cmd::run("ip", &["netns", "pids", ns]);
        s.insert(format!("processes in {ns}"), pids);
    }
    s.insert(
        format!("tasks of {node} (GET /v1/tasks)"),
        serde_json::to_string_pretty(&tasks).unwrap(),
    );
    let mut lab: Vec<String> = shoal_tests::cmd::netns_list()
        .into_iter()
        .filter(|n| n.contains(c.prefix()))
        .collect();
    lab.sort();
    s.insert("the lab's namespaces".into(), lab.join("\n"));
    for i in 0..c.nodes().len() {
        let n = &c.node(i).name;
        for name in names {
            s.insert(
                format!("{n}'s DNS: {name}"),
                format!("{:?}", c.dns(i, NET, name)),
            );
        }
        s.insert(format!("{n}'s balancer"), format!("{:#?}", c.balanced(i)));
        s.insert(
            format!("service ps web (asked of {n})"),
            c.json(i, &["service", "ps", "web"]).to_string(),
        );
    }
    s
}

/// DNS queries for `web` from `ns` to `server`, every 10 ms until
/// stopped: (answered right, failures).
fn dns_loop(
    ns: String,
    server: SocketAddr,
    want: Ipv4Addr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match shoal_tests::dns::query_a(&ns, server, "web") {
                (0, ips) if ips == [want] => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (ok, failed)
    })
}

#[test]
fn s7_netd_restarted_under_load_fails_nothing_and_changes_nothing() {
    let _one = serial();
    let mut c = start();
    let (vip, tasks) = deploy(&c, 4, "v1");
    let r = busiest(&c, &tasks);
    let node = c.node(r).name.clone();
    let _client = c.run(
        r,
        c.dir(),
        &["--network", NET, "--name", "client", "--", "sleep", "300"],
    );
    let client_ns = c.task_ns(r, "client");
    wait_for("the client container", Duration::from_secs(30), || {
        netns_ready(&client_ns) && c.dns(r, NET, "client").is_some_and(|v| v.len() == 1)
    });
    c.wait_converged(Duration::from_secs(30));
    let mut names: Vec<String> = vec!["web".into(), "tasks.web".into(), "client".into()];
    names.extend(tasks.iter().map(|t| t.name.clone()));
    let before = state(&c, r, &names);
    let empty: Vec<&String> = before
        .iter()
        .filter(|(_, v)| v.trim().is_empty() || v.as_str() == "None")
        .map(|(k, _)| k)
        .collect();
    assert!(empty.is_empty(), "nothing recorded for {empty:?}");
    println!(
        "restarting the agent of {node} (runs {:?}); {} pieces of state recorded",
        tasks
            .iter()
            .filter(|t| t.node == node)
            .map(|t| &t.name)
            .collect::<Vec<_>>(),
        before.len()
    );

    let limit = Duration::from_secs(120);
    let mut loops: Vec<Traffic> = (0..3).map(|i| keep_alive(&c, i, limit)).collect();
    loops.push(one_per_connection(&c, r, limit));
    let to_vip = SocketAddr::new(vip.into(), TARGET);
    loops.push(Traffic::keep_alive(&client_ns, to_vip, "/", PAUSE, limit));
    loops.push(Traffic::start(&client_ns, to_vip, "/", PAUSE, limit));
    let gateway: Ipv4Addr = c.json(0, &["network", "inspect", NET])["gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stop_dns = Arc::new(AtomicBool::new(false));
    let dns = dns_loop(
        client_ns.clone(),
        SocketAddr::new(gateway.into(), 53),
        vip,
        Arc::clone(&stop_dns),
    );
    std::thread::sleep(Duration::from_secs(1));

    let old_pid = c.agent_pid(r);
    let started = Instant::now();
    let mut old = c.hand_over(r);
    println!(
        "the new agent of {node} took over {} after it started (old pid {old_pid:?}, new pid {:?})",
        ms(old.took()),
        c.agent_pid(r)
    );
    let exit = old.wait_exit(Duration::from_secs(45));
    let gone = started.elapsed();
    println!(
        "the old agent drained and exited ({exit:?}) {} after the new one started",
        ms(gone)
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "the old agent did not exit 0 on its own: {exit:?}"
    );
    // The new agent alone, under load, for a while.
    std::thread::sleep(Duration::from_secs(2));
    stop_dns.store(true, Ordering::Relaxed);
    let (dns_ok, dns_failed) = dns.join().expect("the DNS loop");
    println!(
        "DNS queries for `web` to {node}'s server: {dns_ok} answered, {} failed",
        dns_failed.len()
    );
    assert!(dns_failed.is_empty(), "DNS failures: {dns_failed:?}");
    assert!(dns_ok > 0);
    for l in loops {
        let r = l.stop();
        assert_no_failure(&r);
        let after = r.samples.iter().filter(|s| s.at > started + gone).count();
        assert!(after > 0, "{}: nothing sent after the handover", r.what);
    }

    // Nothing changed: no stale or duplicate kernel, DNS or balancer entry.
    c.wait_converged(Duration::from_secs(30));
    let after = state(&c, r, &names);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    for k in &changed {
        println!(
            "CHANGED {k}:\n--- before\n{}\n--- after\n{}",
            before.get(*k).map_or("(none)", String::as_str),
            after.get(*k).map_or("(none)", String::as_str)
        );
    }
    println!(
        "{} pieces of state compared before and after (kernel state of {node}, its sandbox and {} task namespaces, listening sockets, processes, namespaces, every node's DNS and balancer, service ps): {} changed",
        after.len(),
        after.keys().filter(|k| k.starts_with("kernel shoal-t.")).count(),
        changed.len()
    );
    assert!(
        changed.is_empty(),
        "state changed across the restart: {changed:?}"
    );
    assert_eq!(ps(&c, r, "web").len(), 4);
}
