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
    /// `unix://…` of its API.
    pub api: String,
    /// Its state directory.
    pub state: PathBuf,
}

impl Agent {
    /// Starts an agent for node `node` (a lab namespace) at `ip`, embedded
    /// store under `dir`, with `extra` flags.
    pub fn start(node: &str, ip: Ipv4Addr, dir: &Path, extra: &[&str]) -> Agent {
        let state = dir.join("state");
        let api = format!("unix://{}", dir.join("netd.sock").display());
        let mut args: Vec<String> = [
            "--api",
            &api,
            "agent",
            "--node-name",
            node,
            "--netns",
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
        let a = Agent {
            proc: spawn(&args),
            args,
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
        self.proc = spawn(&self.args);
        self.wait_ready();
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

fn spawn(args: &[String]) -> Proc {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(NETD, &a)
}

/// The lab, a temp dir and one agent on node `n1` (198.18.0.1).
pub struct AgentNode {
    /// The agent.
    pub agent: Agent,
    /// The node's namespace.
    pub node: String,
    /// Temp files.
    pub dir: PathBuf,
    /// Removes the namespaces (keep last so it drops after the agent).
    pub lab: Lab,
}

impl AgentNode {
    /// Starts it.
    pub fn start() -> AgentNode {
        let mut lab = Lab::new();
        let node = lab.node("n1", Ipv4Addr::new(198, 18, 0, 1)).name;
        let dir = std::env::temp_dir().join(format!("netd-test-{}", lab.prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        let agent = Agent::start(&node, Ipv4Addr::new(198, 18, 0, 1), &dir, &[]);
        AgentNode {
            agent,
            node,
            dir,
            lab,
        }
    }

    /// The namespace of task `name` on this node.
    pub fn task_ns(&self, name: &str) -> String {
        format!("shoal-t.{}.{name}", self.node)
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        // The agent first: it writes its state until it stops.
        let _ = self.agent.proc.stop(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
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
