//! `shoal-demo`: a three-node shoal cluster on this machine, the demo stack
//! deployed on it, and a live view of its traffic while things go wrong.
//!
//! Usage: `shoal-demo --netd PATH [--keep]` (or `--clean PREFIX` to remove
//! a cluster left by `--keep`), run from the repository root
//! (the stack's replicas run `examples/web.py` from there). As root: it
//! makes network namespaces. `scripts/demo.sh` builds shoal and runs it.
//!
//! Acts: start the cluster (three nodes, a three-member etcd); deploy
//! `examples/stack.yml`; send requests through node 1's published port
//! under four policies; kill a replica; cut a node off the network. Every
//! act prints its counts and timings. Everything is removed at the end, or
//! left running with `--keep` (the README says how to look around).

mod view;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{Cluster, ClusterSpec, Traffic};
use view::View;

/// Where the demo's clients send requests: node 1's published port.
const ENTRY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 8080);

struct Args {
    netd: PathBuf,
    keep: bool,
}

const USAGE: &str = "usage: shoal-demo --netd PATH [--keep] | shoal-demo --clean PREFIX";

fn args() -> Result<Args, String> {
    let mut netd = None;
    let mut keep = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--netd" => netd = it.next().map(PathBuf::from),
            "--keep" => keep = true,
            "--clean" => {
                let prefix = it.next().ok_or(USAGE)?;
                shoal_tests::cluster::remove_kept(&prefix);
                println!("removed the cluster {prefix}");
                std::process::exit(0);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}` ({USAGE})")),
        }
    }
    let netd = netd.ok_or(format!("--netd PATH is required ({USAGE})"))?;
    if !netd.exists() {
        return Err(format!("--netd {}: no such file", netd.display()));
    }
    if !std::path::Path::new("examples/web.py").exists() {
        return Err("run shoal-demo from the repository root (examples/web.py is not here)".into());
    }
    Ok(Args { netd, keep })
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shoal-demo: {e}");
            std::process::exit(2);
        }
    };
    let mut v = View::new();
    v.act("Starting a cluster: three nodes, a three-member etcd, a netd agent per node");
    let t = Instant::now();
    let spec = ClusterSpec::new(&a.netd).nodes(3).etcd_members(3);
    let mut c = Cluster::start(spec);
    v.note(format!("cluster up in {:.1?}", t.elapsed()));
    v.note(c.describe());

    v.act("Deploying examples/stack.yml (web: 4 replicas on port 8080; client)");
    let t = Instant::now();
    let out = c.netd(0, &["stack", "deploy", "-c", "examples/stack.yml", "demo"]);
    v.note(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    let tasks = c.wait_healthy(0, "web", 4, Duration::from_secs(60));
    c.wait_converged(Duration::from_secs(30));
    v.note(format!("4 healthy replicas after {:.1?}", t.elapsed()));
    for t in &tasks {
        v.note(format!(
            "  {:<7} on {:<10} {}",
            t["name"].as_str().unwrap_or("?"),
            t["node"].as_str().unwrap_or("?"),
            t["ip"].as_str().unwrap_or("?")
        ));
    }
    let client = c.task_ns(node_of(&c, "client", "client.1").unwrap_or(0), "client.1");
    v.note(format!(
        "the client service resolves `web` to {:?} from its own namespace",
        shoal_tests::dns::query_a(&client, SocketAddr::new(gateway(&c).into(), 53), "web").1
    ));

    let entry_ns = c.node(0).name.clone();
    for policy in ["round-robin", "least-conn", "p2c", "maglev"] {
        v.act(&format!(
            "Policy {policy}: 3 s of requests through node 1's port 8080"
        ));
        c.ok(0, &["service", "update", "web", "--policy", policy]);
        c.wait_converged(Duration::from_secs(10));
        let traffic = Traffic::start(
            &entry_ns,
            ENTRY,
            "/",
            Duration::from_millis(2),
            Duration::from_secs(10),
        );
        v.watch(&c, &traffic, Duration::from_secs(3), None);
        let r = traffic.stop();
        v.shares(&r.answers(), r.failures().len());
    }
    c.ok(0, &["service", "update", "web", "--policy", "round-robin"]);
    c.wait_converged(Duration::from_secs(10));

    v.act("Killing replica web.2's process (kill -9)");
    let traffic = Traffic::start(
        &entry_ns,
        ENTRY,
        "/",
        Duration::from_millis(2),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(1));
    let victim_node = node_of(&c, "web", "web.2").unwrap_or(0);
    let killed_at = Instant::now();
    kill_all_in(&c.task_ns(victim_node, "web.2"));
    v.watch(
        &c,
        &traffic,
        Duration::from_secs(4),
        Some(("web.2 killed", killed_at)),
    );
    let r = traffic.stop();
    // The gap in web.2's answers: from its last answer before the kill to
    // the first from its restarted process.
    let web2: Vec<Instant> = r
        .samples
        .iter()
        .filter(|s| s.result.as_deref().map(str::trim) == Ok("web.2"))
        .map(|s| s.at)
        .collect();
    let before = web2.iter().filter(|t| **t < killed_at).max();
    let back = web2.iter().filter(|t| **t > killed_at).min();
    v.note(format!(
        "web.2 took no request for {}; failed requests: {} of {}",
        match (before, back) {
            (Some(b), Some(a)) => format!(
                "{:.1?}, then its replica, restarted by the scheduler under the same name, took traffic again",
                *a - *b
            ),
            _ => "the rest of the act".to_string(),
        },
        r.failures().len(),
        r.samples.len()
    ));
    c.wait_healthy(0, "web", 4, Duration::from_secs(60));

    let cut = 2;
    v.act(&format!(
        "Cutting node {} ({}) off the network",
        cut + 1,
        c.node(cut).name
    ));
    let traffic = Traffic::start(
        &entry_ns,
        ENTRY,
        "/",
        Duration::from_millis(2),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(1));
    let on_cut: Vec<String> = c
        .json(0, &["service", "ps", "web"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["node"].as_str() == Some(c.node(cut).name.as_str()))
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let cut_at = Instant::now();
    c.cut(cut);
    v.watch(
        &c,
        &traffic,
        Duration::from_secs(8),
        Some(("node cut", cut_at)),
    );
    let left = Instant::now();
    let r = traffic.stop();
    v.note(format!(
        "its replicas {on_cut:?}: gone from node 1's DNS and balancer within the lease (3 s); failed requests: {} of {}; the other nodes took their slots over",
        r.failures().len(),
        r.samples.len()
    ));
    v.note(format!("(watched for {:.1?} after the cut)", left - cut_at));
    c.heal(cut);

    if a.keep {
        let api = c.api(0);
        let node1 = c.node(0).name.clone();
        let prefix = c.keep();
        v.act("Left running (--keep)");
        v.note(format!("export SHOAL_API={api}   # node 1's agent"));
        v.note("target/release/netd node ls; target/release/netd service ps web");
        v.note(format!(
            "nsenter --net=/run/netns/{node1} curl -s 198.18.0.1:8080/   # the routing mesh"
        ));
        v.note(
            "target/release/netd run --network front -- getent hosts web   # DNS from a new task",
        );
        v.note(format!(
            "scripts/demo.sh --clean {prefix}   # remove it all"
        ));
        return;
    }
    v.act("Cleaning up");
    drop(c);
    v.note("every namespace, process and file is removed");
}

/// The node index running task `task` of `service`.
fn node_of(c: &Cluster, service: &str, task: &str) -> Option<usize> {
    let ps = c.try_json(0, &["service", "ps", service])?;
    let node = ps.as_array()?.iter().find(|t| t["name"] == task)?["node"]
        .as_str()?
        .to_string();
    c.node_index(&node)
}

fn gateway(c: &Cluster) -> Ipv4Addr {
    c.json(0, &["network", "inspect", "front"])["gateway"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(Ipv4Addr::new(10, 77, 0, 1))
}

/// SIGKILL to every process inside namespace `ns`.
fn kill_all_in(ns: &str) {
    let out = shoal_tests::cmd::output("ip", &["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
