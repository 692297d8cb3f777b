//! What scenarios 2, 3 and 7 share: `web` as the demo runs it, replicas of
//! `examples/web.py` (HTTP/1.1, keep-alive) behind an HTTP-mode port (the
//! balancer proxies requests, retrying idempotent ones on another replica),
//! and keep-alive clients of it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_tests::cluster::{Report, Traffic};
use shoal_tests::Cluster;

use crate::common::{ms, placement, python, tasks, vip, Task, NET, PUBLISHED, SUBNET, TARGET};

/// The demo's replica program, by absolute path (replicas run from the
/// agent's working directory).
pub const WEB_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.py");

/// The pause between a loop's requests.
pub const PAUSE: Duration = Duration::from_millis(5);

/// `web.py`'s command line, answering `<task> <tag>`.
pub fn web_command(tag: &str) -> Vec<String> {
    [python(), WEB_PY, &TARGET.to_string(), tag]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Through node 0: network `front`, then `web`, `replicas` replicas of
/// `web.py` answering `<task> <tag>`, published on [`PUBLISHED`] in HTTP
/// mode, TCP-checked every 200 ms; waits until all are healthy and every
/// node applied it and resolves `web`. Returns the VIP and the tasks.
pub fn deploy(c: &Cluster, replicas: usize, tag: &str) -> (Ipv4Addr, Vec<Task>) {
    c.ok(0, &["network", "create", NET, "--subnet", SUBNET]);
    let t = Instant::now();
    let n = replicas.to_string();
    let publish = format!("{PUBLISHED}:{TARGET}/http");
    let mut args = vec![
        "service",
        "create",
        "web",
        "--network",
        NET,
        "--publish",
        &publish,
        "--health",
        "tcp",
        "--health-interval",
        "200ms",
        "--replicas",
        &n,
        "--",
    ];
    let command = web_command(tag);
    args.extend(command.iter().map(String::as_str));
    c.ok(0, &args);
    let ts = tasks(&c.wait_healthy(0, "web", replicas, Duration::from_secs(60)));
    c.wait_converged(Duration::from_secs(30));
    let vip = vip(c, 0, "web");
    for i in 0..c.nodes().len() {
        assert_eq!(
            c.dns(i, NET, "web"),
            Some(vec![vip]),
            "`web` in node {i}'s DNS"
        );
    }
    println!(
        "deployed `web` ({replicas} replicas of web.py, HTTP mode on {PUBLISHED}, VIP {vip}): healthy and applied everywhere after {}; placement {:?}",
        ms(t.elapsed()),
        placement(&ts)
    );
    (vip, ts)
}

/// A keep-alive request loop from node `i`'s namespace to its own
/// published port.
pub fn keep_alive(c: &Cluster, i: usize, limit: Duration) -> Traffic {
    let n = c.node(i);
    Traffic::keep_alive(
        &n.name,
        SocketAddr::new(n.ip.into(), PUBLISHED),
        "/",
        PAUSE,
        limit,
    )
}

/// A loop of one request per connection from node `i`'s namespace to its
/// own published port.
pub fn one_per_connection(c: &Cluster, i: usize, limit: Duration) -> Traffic {
    let n = c.node(i);
    Traffic::start(
        &n.name,
        SocketAddr::new(n.ip.into(), PUBLISHED),
        "/",
        PAUSE,
        limit,
    )
}

/// The task name in an answer (`web.3 v1\n` -> `web.3`).
pub fn task_of(answer: &str) -> &str {
    answer.split_whitespace().next().unwrap_or_default()
}

/// Prints the report's summary and its connection count; asserts that no
/// request failed.
pub fn assert_no_failure(r: &Report) {
    println!("{} (over {} connection(s))", r.summary(), r.connections());
    let failed: Vec<String> = r
        .failures()
        .iter()
        .map(|s| format!("{:?}", s.result))
        .collect();
    assert!(failed.is_empty(), "{}: failed requests: {failed:?}", r.what);
    assert!(!r.samples.is_empty(), "{}: no request sent", r.what);
}

/// The sum over node `i`'s listeners of the counter `name` (0 if the
/// agent does not answer).
pub fn counter(c: &Cluster, i: usize, name: &str) -> u64 {
    c.metrics(i)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The backends (`ip:port`) of node `i`'s balancer listeners whose name
/// starts with `prefix` (`None` if the agent does not answer).
pub fn backends(c: &Cluster, i: usize, prefix: &str) -> Option<BTreeSet<String>> {
    Some(
        c.balanced(i)?
            .into_iter()
            .filter(|(l, _)| l.starts_with(prefix))
            .map(|(_, b)| b)
            .collect(),
    )
}
