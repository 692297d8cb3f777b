//! Driving the real `netd` binary: an agent in a test node, and client
//! commands against its API socket.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::{Lab, Proc};

/// The netd binary under test.
pub const NETD: &str = env!("CARGO_BIN_EXE_netd");

/// A running `netd agent` for one node.
pub struct Agent {
    /// The process (stopped on drop).
    pub proc: Proc,
    /// Its arguments, to start it again.
    pub args: Vec<String>,
    /// What it runs under, e.g. `ip netns exec NODE` (empty: nothing).
    pub launcher: Vec<String>,
    /// `unix://…` of its API.
    pub api: String,
    /// Its state directory.
    pub state: PathBuf,
}

impl Agent {
    /// Starts an agent for node `node` (a lab namespace) at `ip`, embedded
    /// store under `dir`, with `extra` flags.
    pub fn start(node: &str, ip: Ipv4Addr, dir: &Path, extra: &[&str]) -> Agent {
        let mut flags = vec!["--netns", node];
        flags.extend(extra);
        Agent::start_under(&[], node, ip, dir, &flags)
    }

    /// Starts an agent for node `node` as [`Agent::start`] does, but as
    /// the argument list `launcher` ends (e.g. `ip netns exec NODE`) and
    /// with no `--netns` of its own: it works in the namespace it runs in.
    pub fn start_under(
        launcher: &[&str],
        node: &str,
        ip: Ipv4Addr,
        dir: &Path,
        extra: &[&str],
    ) -> Agent {
        let state = dir.join("state");
        let api = format!("unix://{}", dir.join("netd.sock").display());
        let mut args: Vec<String> = [
            "--api",
            &api,
            "agent",
            "--node-name",
            node,
            "--advertise",
            &ip.to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--lease-ttl",
            "3s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let launcher: Vec<String> = launcher.iter().map(|s| s.to_string()).collect();
        let a = Agent {
            proc: spawn(&launcher, &args),
            args,
            launcher,
            api,
            state,
        };
        a.wait_ready();
        a
    }

    /// Waits until the API answers.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.netd(&["node", "ls"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent never answered: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the agent (SIGTERM) and starts it again with the same flags.
    pub fn restart(&mut self) {
        let (code, err) = self.proc.stop(Duration::from_secs(10));
        assert_eq!(code, Some(0), "agent exit: {err}");
        self.proc = spawn(&self.launcher, &self.args);
        self.wait_ready();
    }

    /// Kills the agent (SIGKILL, as a crash or the OOM killer would) and
    /// starts it again with the same flags; the killed one's stderr.
    pub fn kill_and_start(&mut self) -> String {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let (_, err) = self.proc.stop(Duration::from_secs(5));
        self.proc = spawn(&self.launcher, &self.args);
        self.wait_ready();
        err
    }

    /// Starts a second agent with the same flags while this one runs: a
    /// graceful restart, the new one takes over from this one. Returns it
    /// once the API answers.
    pub fn start_second(&self) -> Agent {
        let a = Agent {
            proc: spawn(&self.launcher, &self.args),
            args: self.args.clone(),
            launcher: self.launcher.clone(),
            api: self.api.clone(),
            state: self.state.clone(),
        };
        a.wait_ready();
        a
    }

    /// Whether the process has exited by itself (it is a zombie or gone).
    pub fn exited(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.proc.pid()));
        stat.map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code
    /// and stderr.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, String) {
        wait_for("the agent to exit", limit, || self.exited());
        self.proc.stop(Duration::from_secs(1))
    }

    /// Runs a client command against this agent.
    pub fn netd(&self, args: &[&str]) -> Output {
        Command::new(NETD)
            .args(args)
            .env("SHOAL_API", &self.api)
            .stdin(Stdio::null())
            .output()
            .expect("run netd")
    }

    /// Runs a client command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.netd(args);
        assert!(
            out.status.success(),
            "netd {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a client command with `--format json` and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    /// Starts `netd run …` in the background, in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Proc {
        let mut full = vec!["--api", &self.api, "run"];
        full.extend(args);
        let mut cmd = Command::new(NETD);
        cmd.args(&full).current_dir(cwd);
        Proc::from_command(cmd, &format!("netd {}", full.join(" ")))
    }

    /// The VIP of `service` on `network`, from `service inspect`.
    pub fn vip(&self, service: &str, network: &str) -> Ipv4Addr {
        self.json(&["service", "inspect", service])["networks"][network]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("`{service}` has no VIP on `{network}`"))
    }

    /// Starts a container `name` on `network` that only sleeps (a client
    /// or a peer whose namespace a test uses).
    pub fn sleeper(&self, cwd: &Path, network: &str, name: &str) -> Proc {
        self.run(
            cwd,
            &["--network", network, "--name", name, "--", "sleep", "600"],
        )
    }

    /// Waits until `service ps` shows `n` healthy tasks; returns them.
    pub fn wait_healthy(&self, service: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ps = self.json(&["service", "ps", service]);
            let healthy: Vec<Value> = ps
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["state"] == "healthy")
                .cloned()
                .collect();
            if healthy.len() == n && ps.as_array().unwrap().len() == n {
                return healthy;
            }
            assert!(Instant::now() < deadline, "never {n} healthy: {ps}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(launcher: &[String], args: &[String]) -> Proc {
    let mut all: Vec<&str> = launcher.iter().map(String::as_str).collect();
    all.push(NETD);
    all.extend(args.iter().map(String::as_str));
    Proc::spawn(all[0], &all[1..])
}

/// The address of node `n1` in the lab.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// A lab with node `n1` and a temp dir; the agent is the test's to start.
pub struct Bare {
    /// The node's namespace.
    pub node: String,
    /// Temp files (removed on drop).
    pub dir: PathBuf,
    /// The namespaces (removed on drop).
    pub lab: Lab,
}

impl Bare {
    /// Makes them.
    pub fn make() -> Bare {
        let mut lab = Lab::new();
        let node = lab.node("n1", NODE_IP).name;
        let dir = std::env::temp_dir().join(format!("netd-test-{}", lab.prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        Bare { node, dir, lab }
    }

    /// The namespace of task `name` on this node.
    pub fn task_ns(&self, name: &str) -> String {
        format!("shoal-t.{}.{name}", self.node)
    }

    /// The sandbox of `network` on this node.
    pub fn sandbox(&self, network: &str) -> String {
        format!("shoal.{}.{network}", self.node)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        // Then the namespaces, as `lab` drops.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lab, a temp dir and one agent on node `n1` (198.18.0.1); the
/// lab's fields (`node`, `dir`, `lab`, `task_ns`) are reached through it.
pub struct AgentNode {
    /// The agent.
    pub agent: Agent,
    /// The lab and temp dir (dropped after the agent has stopped).
    base: Bare,
}

impl std::ops::Deref for AgentNode {
    type Target = Bare;
    fn deref(&self) -> &Bare {
        &self.base
    }
}

impl AgentNode {
    /// Starts it.
    pub fn start() -> AgentNode {
        AgentNode::start_with(|_| Vec::new())
    }

    /// Starts it with the agent flags `extra` returns, given the temp dir
    /// (made already, e.g. to write a token file into).
    pub fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> AgentNode {
        let base = Bare::make();
        let extra = extra(&base.dir);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let agent = Agent::start(&base.node, NODE_IP, &base.dir, &extra);
        AgentNode::on(base, agent)
    }

    /// `agent`, started by the caller on `base`'s node.
    pub fn on(base: Bare, agent: Agent) -> AgentNode {
        AgentNode { agent, base }
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        // The agent first: it writes its state until it stops.
        let (_, err) = self.agent.proc.stop(Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("agent log:\n{err}");
        }
    }
}

/// `GET path` over HTTP/1.0 from namespace `ns` to `to`; the body.
pub fn http_get(ns: &str, to: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = shoal_tests::sock::connect(ns, to, None)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Waits for `f` to hold, polling; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Starts replica `name` of `service` on `network` through `agent`:
/// python's http.server on 8000, in a directory under `dir` whose `id`
/// file holds the replica's name (so `GET /id` tells replicas apart).
pub fn http_replica(agent: &Agent, dir: &Path, network: &str, service: &str, name: &str) -> Proc {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("id"), name).unwrap();
    agent.run(
        &dir,
        &[
            "--network",
            network,
            "--service",
            service,
            "--name",
            name,
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    )
}

/// Which replicas answer `GET /id` at `to` from `ns`, over `n` requests.
pub fn replicas_seen(ns: &str, to: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .filter_map(|_| http_get(ns, to, "/id").ok())
        .collect()
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body.
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.head, self.body))
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.0 request over `stream` (so the answer ends with the
/// connection), with `headers` and `body`.
pub fn http_exchange(
    mut stream: impl std::io::Read + std::io::Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpAnswer> {
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: netd\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(HttpAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

impl Agent {
    /// The path of the agent's API socket.
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(self.api.trim_start_matches("unix://"))
    }

    /// One raw HTTP request to the agent's API over its unix socket.
    pub fn http(&self, method: &str, path: &str, body: &str) -> HttpAnswer {
        let s = std::os::unix::net::UnixStream::connect(self.socket()).expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        http_exchange(s, method, path, &[], body).expect("API request")
    }
}
