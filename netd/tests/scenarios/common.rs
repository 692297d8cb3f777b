//! What the scenarios share: one cluster at a time, the `web` service (a
//! tiny HTTP server answering `<task name> <its address>`), and its tasks
//! read from `service ps`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::Traffic;
use shoal_tests::{Cluster, ClusterSpec};

/// The netd binary under test.
pub const NETD: &str = env!("CARGO_BIN_EXE_netd");
/// The agents' lease TTL.
pub const TTL: Duration = Duration::from_secs(3);
/// The network every scenario uses.
pub const NET: &str = "front";
/// Its subnet.
pub const SUBNET: &str = "10.77.0.0/16";
/// The port `web` replicas listen on.
pub const TARGET: u16 = 8000;
/// The port `web` is published on, on every node.
pub const PUBLISHED: u16 = 8080;

/// Holds the one-at-a-time lock for a scenario (a failed scenario does not
/// poison the others).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A three-node cluster with a 3 s lease; prints how long it took.
pub fn start() -> Cluster {
    let t = Instant::now();
    let c = Cluster::start(ClusterSpec::new(NETD).lease_ttl(TTL));
    println!(
        "cluster {}: 3 nodes, 3 etcd members, up in {}",
        c.prefix(),
        ms(t.elapsed())
    );
    c
}

/// The Python interpreter itself (not a version manager's shim, which
/// costs a process per start).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The replicas' program: answers every GET with `<hostname> <address>`
/// (the hostname is the task name; the address tells a replacement from
/// the replica it replaced).
pub const SERVER: &str = r#"
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ('%s %s' % (socket.gethostname(), self.connection.getsockname()[0])).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('', 8000), H).serve_forever()
"#;

/// One task as `service ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Task {
    /// Its name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its state.
    pub state: String,
}

impl Task {
    /// What the replica answers: `<name> <ip>`.
    pub fn answer(&self) -> String {
        format!("{} {}", self.name, self.ip)
    }
}

/// Parses `service ps` JSON.
pub fn tasks(ps: &[Value]) -> Vec<Task> {
    let mut v: Vec<Task> = ps
        .iter()
        .map(|t| Task {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            node: t["node"].as_str().unwrap_or_default().to_string(),
            ip: t["ip"].as_str().unwrap_or("0.0.0.0").parse().unwrap(),
            state: t["state"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    v.sort();
    v
}

/// `service ps SERVICE` asked of node `i`.
pub fn ps(c: &Cluster, i: usize, service: &str) -> Vec<Task> {
    tasks(
        c.json(i, &["service", "ps", service])
            .as_array()
            .expect("a list"),
    )
}

/// Through node `via`: network `front` (unless it exists), then a service
/// `name` of `replicas` netd-run replicas of [`SERVER`], TCP-checked every
/// 200 ms, published on `published` (else on the VIP only); waits until
/// all are healthy and every reachable node applied it and resolves the
/// name. Returns the service's VIP and its tasks.
pub fn deploy(
    c: &Cluster,
    via: usize,
    name: &str,
    replicas: usize,
    published: Option<u16>,
) -> (Ipv4Addr, Vec<Task>) {
    if c.try_json(via, &["network", "inspect", NET]).is_none() {
        c.ok(via, &["network", "create", NET, "--subnet", SUBNET]);
    }
    let t = Instant::now();
    let n = replicas.to_string();
    let publish = published.map(|p| format!("{p}:{TARGET}"));
    let port = TARGET.to_string();
    let mut args = vec!["service", "create", name, "--network", NET];
    match &publish {
        Some(p) => args.extend(["--publish", p.as_str()]),
        None => args.extend(["--port", port.as_str()]),
    }
    args.extend([
        "--health",
        "tcp",
        "--health-interval",
        "200ms",
        "--replicas",
        &n,
        "--",
        python(),
        "-c",
        SERVER,
    ]);
    c.ok(via, &args);
    let ts = tasks(&c.wait_healthy(via, name, replicas, Duration::from_secs(60)));
    c.wait_converged(Duration::from_secs(30));
    let vip = vip(c, via, name);
    for i in (0..c.nodes().len()).filter(|i| !c.is_cut(*i)) {
        assert_eq!(
            c.dns(i, NET, name),
            Some(vec![vip]),
            "`{name}` in node {i}'s DNS"
        );
    }
    println!(
        "deployed `{name}` ({replicas} replicas, VIP {vip}): all healthy and applied on every node after {}; placement {:?}",
        ms(t.elapsed()),
        placement(&ts)
    );
    (vip, ts)
}

/// [`deploy`] of `web`, published on [`PUBLISHED`].
pub fn deploy_web(c: &Cluster, replicas: usize) -> (Ipv4Addr, Vec<Task>) {
    deploy(c, 0, "web", replicas, Some(PUBLISHED))
}

/// The VIP of `service` on [`NET`], asked of node `i`.
pub fn vip(c: &Cluster, i: usize, service: &str) -> Ipv4Addr {
    c.json(i, &["service", "inspect", service])["networks"][NET]
        .as_str()
        .expect("a VIP")
        .parse()
        .unwrap()
}

/// Task names per node.
pub fn placement(ts: &[Task]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in ts {
        m.entry(t.node.clone()).or_default().push(t.name.clone());
    }
    m
}

/// The index of the node running the most of `ts` (the lowest on a tie).
pub fn busiest(c: &Cluster, ts: &[Task]) -> usize {
    (0..c.nodes().len())
        .max_by_key(|i| {
            let n = ts.iter().filter(|t| t.node == c.node(*i).name).count();
            (n, usize::MAX - i)
        })
        .unwrap()
}

/// A request loop from node `i`'s namespace to its own published port
/// (the routing mesh as a client outside the cluster meets it).
pub fn mesh_traffic(c: &Cluster, i: usize, limit: Duration) -> Traffic {
    let n = c.node(i);
    Traffic::start(
        &n.name,
        SocketAddr::new(n.ip.into(), PUBLISHED),
        "/",
        Duration::from_millis(10),
        limit,
    )
}

/// Every IPv4 address configured inside each of the cluster's task
/// namespaces (the kernel's truth, not the store's), by namespace.
pub fn task_addresses(c: &Cluster) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let prefix = format!("shoal-t.{}", c.prefix());
    shoal_tests::cmd::netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|ns| {
            let out = shoal_tests::cmd::output("ip", &["-n", &ns, "-o", "-4", "addr", "show"]);
            let ips = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let cidr = l.split_whitespace().nth(3)?;
                    cidr.split('/').next()?.parse().ok()
                })
                .filter(|ip: &Ipv4Addr| !ip.is_loopback())
                .collect();
            (ns, ips)
        })
        .collect()
}

/// A duration in milliseconds, for reports.
pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Every node's lb addresses in `node ls` JSON, as (who, address).
pub fn lb_addresses(nodes: &Value) -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    for n in nodes.as_array().map_or(&[][..], Vec::as_slice) {
        for ip in n["lb_addresses"]
            .as_object()
            .into_iter()
            .flat_map(|l| l.values())
        {
            if let Some(ip) = ip.as_str().and_then(|i| i.parse().ok()) {
                out.push((format!("lb of {}", n["name"]), ip));
            }
        }
    }
    out
}

/// Asserts no address in `held` (who, address) belongs to two holders, and
/// no address sits in two task namespaces in the kernel.
pub fn assert_each_address_once(c: &Cluster, held: &[(String, Ipv4Addr)]) {
    let mut by_ip: BTreeMap<Ipv4Addr, Vec<&str>> = BTreeMap::new();
    for (who, ip) in held {
        by_ip.entry(*ip).or_default().push(who);
    }
    let twice: Vec<_> = by_ip.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(twice.is_empty(), "addresses held twice: {twice:?}");
    let mut ns_of_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    for (ns, ips) in task_addresses(c) {
        for ip in ips {
            ns_of_ip.entry(ip).or_default().push(ns.clone());
        }
    }
    let dup: Vec<_> = ns_of_ip.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        dup.is_empty(),
        "addresses in more than one task namespace: {dup:?}"
    );
}
