//! [`Cluster`]: a whole shoal cluster in one [`Lab`]: N node namespaces on
//! the underlay (198.18.0.1, .2, …), a three-member etcd cluster on the
//! same underlay (198.18.0.101, .102, …, each member in its own namespace)
//! and a `netd agent` per node, plus the faults scenarios need: an agent
//! killed or restarted, a node's underlay link cut, an etcd member stopped.
//!
//! Every process runs inside its own namespace through `nsenter --net`, so
//! an agent reaches etcd over its node's underlay link: cutting the link
//! really partitions the node, from its peers and from the store. `ip netns
//! exec` is not used because it makes a mount namespace, and the task and
//! sandbox namespaces netd mounts under /run/netns would not be seen
//! outside it.
//!
//! The fixture knows nothing of netd's crates: it takes the `netd` binary's
//! path ([`ClusterSpec::new`]), talks to agents through the binary's client
//! commands, and reads `/v1/info` and `/metrics` from the API socket.
//! Indexes are 0-based: node `i` is namespace `<prefix>n{i+1}` at
//! 198.18.0.{i+1}; etcd member `j` is `<prefix>e{j+1}` at 198.18.0.{101+j}.
//!
//! Dropping a [`Cluster`] (panic included) stops the agents, then etcd,
//! then removes every namespace (killing what still runs in them, such as
//! the replicas netd started in its task namespaces) and the temporary
//! directory; on a panic it first prints the tail of every log (and keeps
//! them all under `$SHOAL_TEST_LOGS/<prefix>/` if that is set). All names,
//! addresses and directories are per lab, so clusters run side by side.
//!
//! # Layout
//! - this file: [`ClusterSpec`], [`Cluster`]: start, agents, links, client
//!   commands, what a node's DNS and balancer hold, waiting.
//! - `etcd`: the members: start, stop, cut, status, leader.
//! - `leave`: cleanup on drop, [`Cluster::keep`] and [`remove_kept`].
//! - `daemon`: a process living in a namespace, with its log.
//! - `handover`: [`Cluster::hand_over`], an agent's graceful restart, and
//!   the [`Predecessor`] draining.
//! - [`http`]: a tiny HTTP/1.0 client (TCP in a namespace, unix sockets).
//! - [`traffic`]: [`Traffic`], a request loop recording every outcome.

mod daemon;
mod etcd;
mod handover;
pub mod http;
mod leave;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::ip_in;
use crate::proc::Proc;
use crate::{Lab, Node};
use daemon::Daemon;
pub use daemon::Stop;
pub use handover::Predecessor;
pub use leave::remove_kept;
pub use traffic::{Report, Sample, Traffic};

/// etcd's client port on every member.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// The longest any client command may take before the fixture gives up.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The variable naming a directory where a failed run's logs are kept.
pub const LOGS_ENV: &str = "SHOAL_TEST_LOGS";
/// How long starting (or restarting) waits for etcd and the agents.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `netd` binary.
    pub netd: PathBuf,
    /// Nodes, each with an agent (1 to 100).
    pub nodes: usize,
    /// etcd members (1 to 9); three survive the loss of one.
    pub etcd_members: usize,
    /// The agents' `--lease-ttl`.
    pub lease_ttl: Duration,
    /// The agents' `RUST_LOG`.
    pub log_filter: String,
    /// More `netd agent` flags, given to every agent.
    pub agent_args: Vec<String>,
}

impl ClusterSpec {
    /// Three nodes, three etcd members, a 3 s lease, `info` logs.
    pub fn new(netd: impl Into<PathBuf>) -> ClusterSpec {
        ClusterSpec {
            netd: netd.into(),
            nodes: 3,
            etcd_members: 3,
            lease_ttl: Duration::from_secs(3),
            log_filter: "info".into(),
            agent_args: Vec::new(),
        }
    }

    /// With `n` nodes.
    pub fn nodes(mut self, n: usize) -> ClusterSpec {
        self.nodes = n;
        self
    }

    /// With `n` etcd members.
    pub fn etcd_members(mut self, n: usize) -> ClusterSpec {
        self.etcd_members = n;
        self
    }

    /// With lease TTL `ttl`.
    pub fn lease_ttl(mut self, ttl: Duration) -> ClusterSpec {
        self.lease_ttl = ttl;
        self
    }
}

/// A running cluster; see the module docs.
pub struct Cluster {
    spec: ClusterSpec,
    dir: PathBuf,
    nodes: Vec<Node>,
    members: Vec<Node>,
    agents: Vec<Daemon>,
    etcd: Vec<Daemon>,
    cut: BTreeSet<String>,
    gateways: Mutex<BTreeMap<String, Ipv4Addr>>,
    lab: Option<Lab>,
    keep: bool,
}

impl Cluster {
    /// Starts etcd, waits for its leader, starts the agents and waits until
    /// every agent answers and lists every node. Panics (cleaning up) if
    /// that takes longer than [`START_TIMEOUT`].
    pub fn start(spec: ClusterSpec) -> Cluster {
        assert!((1..=100).contains(&spec.nodes), "1 to 100 nodes");
        assert!((1..=9).contains(&spec.etcd_members), "1 to 9 etcd members");
        assert!(
            spec.netd.exists(),
            "no netd binary at {}",
            spec.netd.display()
        );
        let lab = Lab::new();
        let dir = std::env::temp_dir().join(format!("shoal-cluster-{}", lab.prefix()));
        std::fs::create_dir_all(dir.join("etcd")).expect("create the cluster's directory");
        // Built at once, so a panic below still cleans up what exists.
        let mut c = Cluster {
            spec,
            dir,
            nodes: Vec::new(),
            members: Vec::new(),
            agents: Vec::new(),
            etcd: Vec::new(),
            cut: BTreeSet::new(),
            gateways: Mutex::new(BTreeMap::new()),
            lab: Some(lab),
            keep: false,
        };
        let lab = c.lab.as_mut().expect("the lab");
        for j in 0..c.spec.etcd_members {
            let m = lab.node(
                &format!("e{}", j + 1),
                Ipv4Addr::new(198, 18, 0, 101 + j as u8),
            );
            c.members.push(m);
        }
        for i in 0..c.spec.nodes {
            let n = lab.node(
                &format!("n{}", i + 1),
                Ipv4Addr::new(198, 18, 0, 1 + i as u8),
            );
            c.nodes.push(n);
        }
        c.start_etcd_cluster();
        c.wait_etcd_ready(START_TIMEOUT);
        for i in 0..c.nodes.len() {
            let d = c.agent_daemon(i);
            c.agents.push(d);
            c.agents[i].start();
        }
        for i in 0..c.nodes.len() {
            c.wait_agent_ready(i);
        }
        let want = c.nodes.len();
        wait_for("every agent to list every node", START_TIMEOUT, || {
            (0..want).all(|i| {
                c.try_json(i, &["node", "ls"])
                    .and_then(|v| v.as_array().map(Vec::len))
                    == Some(want)
            })
        });
        c
    }

    fn agent_daemon(&self, i: usize) -> Daemon {
        let n = &self.nodes[i];
        let mut args: Vec<String> = [
            "--api",
            &self.api(i),
            "agent",
            "--node-name",
            &n.name,
            "--netns",
            &n.name,
            "--advertise",
            &n.ip.to_string(),
            "--store",
            &self.store_url(),
            "--state-dir",
            &self.state_dir(i).display().to_string(),
            "--lease-ttl",
            &format!("{}ms", self.spec.lease_ttl.as_millis()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.spec.agent_args.iter().cloned());
        let env = vec![("RUST_LOG".to_string(), self.spec.log_filter.clone())];
        let log = self.dir.join(format!("{}.log", n.name));
        Daemon::new(&n.name, &self.spec.netd, args, env, log)
    }

    fn wait_agent_ready(&self, i: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.netd(i, &["node", "ls"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent of {} never answered: {}\nits log ends with:\n{}",
                self.nodes[i].name,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.agents[i].log_tail(20).join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ----- what it is ----------------------------------------------------

    /// The lab's name prefix (every namespace and etcd name starts with it).
    pub fn prefix(&self) -> &str {
        self.lab.as_ref().map_or("", Lab::prefix)
    }

    /// The underlay namespace (holding the bridge and every node's port).
    pub fn underlay(&self) -> &str {
        self.lab.as_ref().map_or("", Lab::underlay)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The etcd members (namespace names and addresses).
    pub fn etcd_members(&self) -> &[Node] {
        &self.members
    }

    /// `etcd://IP:2379,…`, as the agents' `--store` has it.
    pub fn store_url(&self) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}:{ETCD_CLIENT_PORT}", m.ip))
            .collect();
        format!("etcd://{}", eps.join(","))
    }

    /// The cluster's temporary directory (logs, state, API sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `unix://…` of node `i`'s API.
    pub fn api(&self, i: usize) -> String {
        format!("unix://{}", self.socket(i).display())
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.nodes[i].name))
    }

    /// Node `i`'s `--state-dir` (replica logs are under `logs/`).
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.nodes[i].name)
    }

    /// Node `i`'s agent log.
    pub fn agent_log(&self, i: usize) -> &Path {
        self.agents[i].log()
    }

    /// The namespace of task `task` on node `i`.
    pub fn task_ns(&self, i: usize, task: &str) -> String {
        format!("shoal-t.{}.{task}", self.nodes[i].name)
    }

    /// Node `i`'s sandbox of `network` (where its DNS server and VIPs are).
    pub fn sandbox(&self, i: usize, network: &str) -> String {
        self.nodes[i].sandbox(network)
    }

    /// A few lines saying where everything is, for people.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "cluster {} (files in {})\n",
            self.prefix(),
            self.dir.display()
        );
        for (i, n) in self.nodes.iter().enumerate() {
            s += &format!(
                "  node {} at {}: SHOAL_API={} (log {})\n",
                n.name,
                n.ip,
                self.api(i),
                self.agent_log(i).display()
            );
        }
        for m in &self.members {
            s += &format!("  etcd {} at {}:{ETCD_CLIENT_PORT}\n", m.name, m.ip);
        }
        s
    }

    // ----- client commands ------------------------------------------------

    /// Runs `netd ARGS` against node `i`'s agent (at most [`CLIENT_TIMEOUT`]).
    pub fn netd(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.spec.netd);
        cmd.args(args).env("SHOAL_API", self.api(i));
        output_within(cmd, CLIENT_TIMEOUT)
    }

    /// Runs a client command that must succeed; returns its stdout.
    pub fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.netd(i, args);
        assert!(
            out.status.success(),
            "netd {} on {}: {}",
            args.join(" "),
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a client command with `--format json` that must succeed;
    /// returns its parsed output.
    pub fn json(&self, i: usize, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let text = self.ok(i, &a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("netd {}: {e}: {text}", a.join(" ")))
    }

    /// Like [`Cluster::json`], but `None` when the command fails.
    pub fn try_json(&self, i: usize, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = self.netd(i, &a);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Starts `netd run ARGS` through node `i` in the background, in `cwd`
    /// (the task lives as long as the returned process).
    pub fn run(&self, i: usize, cwd: &Path, args: &[&str]) -> Proc {
        let api = self.api(i);
        let mut full = vec!["--api", api.as_str(), "run"];
        full.extend(args);
        let mut cmd = Command::new(&self.spec.netd);
        cmd.args(&full).current_dir(cwd);
        Proc::from_command(cmd, &format!("netd {}", full.join(" ")))
    }

    /// Node `i`'s `/v1/info` (node, applied_revision, store_revision,
    /// store_error), or `None` if the agent does not answer.
    pub fn info(&self, i: usize) -> Option<Value> {
        let a = http::request_unix(&self.socket(i), "GET", "/v1/info").ok()?;
        serde_json::from_str(&a.body).ok()
    }

    /// Node `i`'s Prometheus metrics, or `None` if the agent does not answer.
    pub fn metrics(&self, i: usize) -> Option<String> {
        let a = http::request_unix(&self.socket(i), "GET", "/metrics").ok()?;
        (a.status == 200).then_some(a.body)
    }

    /// The backends in node `i`'s balancer, as (listener, backend address)
    /// pairs, or `None` if the agent does not answer.
    pub fn balanced(&self, i: usize) -> Option<BTreeSet<(String, String)>> {
        let m = self.metrics(i)?;
        let label = |line: &str, key: &str| -> Option<String> {
            let from = line.find(&format!("{key}=\""))? + key.len() + 2;
            let len = line[from..].find('"')?;
            Some(line[from..from + len].to_string())
        };
        Some(
            m.lines()
                .filter(|l| l.starts_with("shoal_lb_backend_weight{"))
                .filter_map(|l| Some((label(l, "listener")?, label(l, "backend")?)))
                .collect(),
        )
    }

    /// What node `i`'s DNS server for `network` answers for `name` (type
    /// A), asked from inside the node's sandbox: the addresses, sorted
    /// (empty for NXDOMAIN), or `None` if nothing answered.
    pub fn dns(&self, i: usize, network: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let gw = self.gateway(network)?;
        let ns = self.sandbox(i, network);
        if !netns_ready(&ns) {
            return None;
        }
        let (rcode, mut ips) = crate::dns::query_a(&ns, SocketAddr::new(gw.into(), 53), name);
        if rcode == 255 {
            return None;
        }
        ips.sort();
        Some(ips)
    }

    /// The gateway of `network`, asked once of any agent that answers.
    fn gateway(&self, network: &str) -> Option<Ipv4Addr> {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = g.get(network) {
            return Some(*ip);
        }
        let ip: Ipv4Addr = (0..self.nodes.len())
            .filter(|i| !self.is_cut(*i))
            .find_map(|i| self.try_json(i, &["network", "inspect", network]))?["gateway"]
            .as_str()?
            .parse()
            .ok()?;
        g.insert(network.to_string(), ip);
        Some(ip)
    }

    // ----- waiting ----------------------------------------------------------

    /// Waits until `service ps` (asked of node `i`) shows exactly `n`
    /// tasks, all healthy; returns them.
    pub fn wait_healthy(&self, i: usize, service: &str, n: usize, limit: Duration) -> Vec<Value> {
        let mut last = Value::Null;
        let found = wait_until(limit, || {
            let Some(ps) = self.try_json(i, &["service", "ps", service]) else {
                return false;
            };
            let tasks = ps.as_array().cloned().unwrap_or_default();
            let ok = tasks.len() == n && tasks.iter().all(|t| t["state"] == "healthy");
            last = ps;
            ok
        });
        assert!(
            found.is_some(),
            "`{service}` never had {n} healthy tasks; last: {last}"
        );
        last.as_array().cloned().unwrap_or_default()
    }

    /// Waits until every node whose agent runs and whose link is up has
    /// applied the store's current revision; returns how long it took.
    pub fn wait_converged(&self, limit: Duration) -> Duration {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.is_cut(*i) && self.agents[*i].pid().is_some())
            .collect();
        let rev = |v: &Value, k: &str| v[k].as_i64().unwrap_or(0);
        let mut target = 0;
        wait_for("a store revision", limit, || {
            target = live
                .iter()
                .filter_map(|i| self.info(*i))
                .map(|v| rev(&v, "store_revision"))
                .max()
                .unwrap_or(0);
            target > 0
        });
        wait_for("every live node to apply the store", limit, || {
            live.iter().all(|i| {
                self.info(*i)
                    .is_some_and(|v| rev(&v, "applied_revision") >= target)
            })
        })
    }

    // ----- faults: agents -----------------------------------------------------

    /// Stops node `i`'s agent (its data plane and replicas stay, as netd
    /// leaves them).
    pub fn stop_agent(&mut self, i: usize, how: Stop) {
        self.agents[i].stop(how, Duration::from_secs(10));
    }

    /// Starts node `i`'s agent again with the same flags and waits until
    /// its API answers (which needs etcd reachable).
    pub fn start_agent(&mut self, i: usize) {
        self.agents[i].start();
        self.wait_agent_ready(i);
    }

    /// [`Cluster::stop_agent`], then [`Cluster::start_agent`].
    pub fn restart_agent(&mut self, i: usize, how: Stop) {
        self.stop_agent(i, how);
        self.start_agent(i);
    }

    /// The pid of node `i`'s agent while it runs.
    pub fn agent_pid(&mut self, i: usize) -> Option<u32> {
        if self.agents[i].running() {
            self.agents[i].pid()
        } else {
            None
        }
    }

    // ----- faults: links ---------------------------------------------------------

    /// Cuts node `i` off the underlay (its bridge port goes down): it loses
    /// its peers and etcd at once.
    pub fn cut(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        self.set_port(&name, false);
    }

    /// Puts node `i` back on the underlay.
    pub fn heal(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        self.set_port(&name, true);
    }

    /// Whether node `i` is cut off.
    pub fn is_cut(&self, i: usize) -> bool {
        self.cut.contains(&self.nodes[i].name)
    }

    fn set_port(&mut self, ns: &str, up: bool) {
        let short = ns.strip_prefix(self.prefix()).unwrap_or(ns);
        let port = format!("u-{short}");
        let state = if up { "up" } else { "down" };
        ip_in(self.underlay(), &["link", "set", &port, state]);
        if up {
            self.cut.remove(ns);
        } else {
            self.cut.insert(ns.to_string());
        }
    }
}

/// Whether `/run/netns/NS` is a namespace one can enter (the file exists
/// a moment before its bind mount does).
pub fn netns_ready(ns: &str) -> bool {
    let path = Path::new("/run/netns").join(ns);
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// Waits for `f` to hold, polling every 20 ms; returns how long it took, or
/// `None` after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_until`], but panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) -> Duration {
    wait_until(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Runs `cmd` with its output captured; kills it and panics after `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} took longer than {limit:?}");
        }
    }
}
