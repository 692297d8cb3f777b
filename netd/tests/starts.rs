//! How an agent is started and what an earlier one left behind: an agent
//! started the common way to put a daemon in a namespace (`ip netns exec`),
//! namespace files a crash left with nothing mounted on them, and an agent
//! killed with SIGKILL while it served. Each time the agent must serve a
//! service by name, VIP and published port, and so must every later agent
//! and `netd run`.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use shoal_overlay::netns::{self, Entry};
use shoal_tests::Proc;
use support::{http_replica, replicas_seen, wait_for, Agent, AgentNode, Bare, NETD};

use support::NODE_IP;

fn ask(ns: &str, name: &str) -> (u8, Vec<Ipv4Addr>) {
    shoal_tests::dns::query_a(ns, "10.77.0.1:53".parse().unwrap(), name)
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `network create front`, `service create web` published on 8080.
fn create_web(a: &Agent) {
    a.ok(&["network", "create", "front", "--subnet", "10.77.0.0/24"]);
    a.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--publish",
        "8080:8000",
        "--health",
        "tcp",
    ]);
}

/// From client task `client`: `web` is the VIP, `tasks.web` the replicas,
/// and the VIP and the node's published port reach exactly `replicas`.
fn assert_serves(t: &Bare, a: &Agent, client: &str, replicas: &[&str]) {
    let ns = t.task_ns(client);
    wait_for("the client's DNS", Duration::from_secs(20), || {
        netns::exists(&ns) && ask(&ns, "tasks.web").1.len() == replicas.len()
    });
    let vip = a.vip("web", "front");
    assert_eq!(ask(&ns, "web"), (0, vec![vip]));
    let want = names(replicas);
    let n = 10 * replicas.len();
    assert_eq!(
        replicas_seen(&ns, SocketAddr::new(vip.into(), 8000), n),
        want
    );
    let published = SocketAddr::new(NODE_IP.into(), 8080);
    assert_eq!(replicas_seen(&t.node, published, n), want);
}

/// Every namespace the agent keeps for this node is mounted where this
/// process (in the host's mount namespace) sees it.
fn assert_all_mounted(t: &Bare) {
    for prefix in [t.sandbox(""), t.task_ns("")] {
        let dir = std::fs::read_dir(netns::NETNS_DIR).unwrap();
        for name in dir.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if name.starts_with(&prefix) {
                let path = Path::new(netns::NETNS_DIR).join(&name);
                assert_eq!(netns::entry(&path), Entry::Namespace, "{name}");
            }
        }
    }
}

#[test]
fn an_agent_started_with_ip_netns_exec_serves_and_so_does_the_next() {
    let t = Bare::make();
    let launcher = ["ip", "netns", "exec", t.node.as_str()];
    let agent = Agent::start_under(&launcher, &t.node, NODE_IP, &t.dir, &[]);
    let mut t = AgentNode::on(t, agent);
    create_web(&t.agent);
    let _r1 = http_replica(&t.agent, &t.dir, "front", "web", "web.1");
    // A `netd run` from a mount namespace of its own too.
    let r2_dir = t.dir.join("web.2");
    std::fs::create_dir_all(&r2_dir).unwrap();
    std::fs::write(r2_dir.join("id"), "web.2").unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &t.node, NETD, "--api", &t.agent.api, "run"])
        .args(["--network", "front", "--service", "web", "--name", "web.2"])
        .args(["--", "python3", "-m", "http.server", "8000"])
        .current_dir(&r2_dir);
    let _r2 = Proc::from_command(cmd, "ip netns exec netd run web.2");
    t.agent.wait_healthy("web", 2);
    let _client = t.agent.sleeper(&t.dir, "front", "client");
    assert_serves(&t, &t.agent, "client", &["web.1", "web.2"]);
    assert_all_mounted(&t);

    // The next agent, started the same way, takes over what this one made.
    t.agent.restart();
    t.agent.wait_healthy("web", 2);
    let _r3 = http_replica(&t.agent, &t.dir, "front", "web", "web.3");
    t.agent.wait_healthy("web", 3);
    assert_serves(&t, &t.agent, "client", &["web.1", "web.2", "web.3"]);
    assert_all_mounted(&t);
}

#[test]
fn namespace_files_with_nothing_mounted_are_replaced_not_fatal() {
    let t = Bare::make();
    // What a crash between creating the file and mounting onto it leaves
    // (or an agent whose mounts were private to it): empty files named like
    // a sandbox and like a task's namespace.
    std::fs::create_dir_all(netns::NETNS_DIR).unwrap();
    let stale = [t.sandbox("front"), t.task_ns("web.1")];
    for name in &stale {
        std::fs::write(Path::new(netns::NETNS_DIR).join(name), b"").unwrap();
        assert_eq!(
            netns::entry(&Path::new(netns::NETNS_DIR).join(name)),
            Entry::Stale
        );
    }
    let agent = Agent::start(&t.node, NODE_IP, &t.dir, &[]);
    let t = AgentNode::on(t, agent);
    create_web(&t.agent);
    let _r1 = http_replica(&t.agent, &t.dir, "front", "web", "web.1");
    t.agent.wait_healthy("web", 1);
    let _client = t.agent.sleeper(&t.dir, "front", "client");
    assert_serves(&t, &t.agent, "client", &["web.1"]);
    assert_all_mounted(&t);
}

#[test]
fn an_agent_killed_while_serving_leaves_nothing_that_breaks_the_next() {
    let mut t = AgentNode::start();
    create_web(&t.agent);
    let _r1 = http_replica(&t.agent, &t.dir, "front", "web", "web.1");
    t.agent.wait_healthy("web", 1);
    let _client = t.agent.sleeper(&t.dir, "front", "client");
    assert_serves(&t, &t.agent, "client", &["web.1"]);
    let state = t.agent.state.clone();
    for file in ["agent.lock", "tasks.json"] {
        assert!(state.join(file).exists(), "{file} before the kill");
    }

    // What SIGKILL leaves: the API and handover socket files with no
    // listener, the lock file (its flock died with the process), the task
    // records, and a half-written temporary file beside them.
    std::fs::write(state.join("tasks.json.tmp"), b"{\"web.9\": {\"netw").unwrap();
    t.agent.kill_and_start();
    t.agent.wait_healthy("web", 1);
    assert_serves(&t, &t.agent, "client", &["web.1"]);
    let _r2 = http_replica(&t.agent, &t.dir, "front", "web", "web.2");
    t.agent.wait_healthy("web", 2);
    assert_serves(&t, &t.agent, "client", &["web.1", "web.2"]);
}
