//! The balancers under test, each started as a child process on a free
//! port: `shoal-lb` (the real binary, L4 or L7), and optionally HAProxy and
//! nginx with the algorithm closest to each shoal policy.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::child::{free_port, ChildGuard};
use crate::scenario::Mode;

/// Every shoal-lb policy, in the order tables list them.
pub const POLICIES: [&str; 8] = [
    "round-robin",
    "weighted",
    "least-conn",
    "random",
    "p2c",
    "peak-ewma",
    "maglev",
    "ring-hash",
];

/// Which program balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    /// `shoal-lb`.
    Shoal,
    /// `haproxy`.
    Haproxy,
    /// `nginx` (HTTP only here: the stream module is often not installed).
    Nginx,
}

/// One thing to measure: a balancer, a mode and a (shoal) policy name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The program.
    pub balancer: Balancer,
    /// L4 or L7.
    pub mode: Mode,
    /// A name from [`POLICIES`]; peers use their equivalent.
    pub policy: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = match self.balancer {
            Balancer::Shoal => "shoal",
            Balancer::Haproxy => "haproxy",
            Balancer::Nginx => "nginx",
        };
        write!(f, "{b}-{}/{}", self.mode, self.policy)
    }
}

impl Subject {
    /// Parses a label as [`fmt::Display`] writes it (`shoal-tcp/p2c`).
    pub fn parse(label: &str) -> Option<Subject> {
        let (head, policy) = label.split_once('/')?;
        let (balancer, mode) = head.split_once('-')?;
        let balancer = match balancer {
            "shoal" => Balancer::Shoal,
            "haproxy" => Balancer::Haproxy,
            "nginx" => Balancer::Nginx,
            _ => return None,
        };
        let mode = match mode {
            "tcp" => Mode::Tcp,
            "http" => Mode::Http,
            _ => return None,
        };
        Some(Subject {
            balancer,
            mode,
            policy: policy.to_string(),
        })
    }

    /// The peer's directive for this policy, `None` when it has none.
    pub fn peer_algorithm(&self) -> Option<&'static str> {
        match (self.balancer, self.policy.as_str()) {
            (Balancer::Haproxy, "round-robin" | "weighted") => Some("balance roundrobin"),
            (Balancer::Haproxy, "least-conn") => Some("balance leastconn"),
            (Balancer::Haproxy, "random") => Some("balance random(1)"),
            (Balancer::Haproxy, "p2c") => Some("balance random(2)"),
            (Balancer::Nginx, "round-robin" | "weighted") => Some(""),
            (Balancer::Nginx, "least-conn") => Some("least_conn;"),
            (Balancer::Nginx, "random") => Some("random;"),
            (Balancer::Nginx, "p2c") => Some("random two least_conn;"),
            _ => None,
        }
    }
}

/// What a balancer needs to start.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The shoal-lb binary.
    pub shoal_bin: &'a Path,
    /// Backends and their weights.
    pub backends: &'a [(SocketAddr, u32)],
    /// Extra shoal-lb flags from the scenario.
    pub shoal_args: &'a [String],
    /// Where config files and logs go.
    pub work_dir: &'a Path,
}

/// A running balancer; killed on drop.
pub struct Running {
    /// Where clients connect.
    pub addr: SocketAddr,
    _child: ChildGuard,
}

/// Starts `subject` and waits until it listens.
pub fn start(subject: &Subject, launch: &Launch<'_>) -> Result<Running> {
    let addr = free_port()?;
    let tag = subject.to_string().replace('/', "-");
    let log = launch.work_dir.join(format!("{tag}.log"));
    let cmd = match subject.balancer {
        Balancer::Shoal => shoal_command(subject, launch, addr),
        Balancer::Haproxy => {
            let cfg = launch.work_dir.join(format!("{tag}.cfg"));
            std::fs::write(&cfg, haproxy_config(subject, launch.backends, addr)?)?;
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(&cfg);
            c
        }
        Balancer::Nginx => {
            let prefix = launch.work_dir.join(&tag);
            std::fs::create_dir_all(prefix.join("logs"))?;
            let cfg = prefix.join("nginx.conf");
            std::fs::write(&cfg, nginx_config(subject, launch.backends, addr, &prefix)?)?;
            let mut c = Command::new("nginx");
            c.arg("-p").arg(&prefix).arg("-c").arg(&cfg);
            c
        }
    };
    let mut child = ChildGuard::spawn(&subject.to_string(), cmd, &log)?;
    child.wait_listening(addr, Duration::from_secs(10))?;
    Ok(Running {
        addr,
        _child: child,
    })
}

fn shoal_command(subject: &Subject, launch: &Launch<'_>, addr: SocketAddr) -> Command {
    let mut c = Command::new(launch.shoal_bin);
    c.arg("--listen").arg(addr.to_string());
    c.args([
        "--policy",
        &subject.policy,
        "--mode",
        &subject.mode.to_string(),
        "--log",
        "warn",
    ]);
    for (a, w) in launch.backends {
        c.arg("--backend").arg(format!("{a}@{w}"));
    }
    if subject.mode == Mode::Http {
        // Hash policies key on a per-request header, so they spread load
        // even though every request comes from 127.0.0.1.
        c.args(["--hash-key", "header:x-request-id"]);
    }
    c.args(launch.shoal_args);
    c
}

/// HAProxy configuration for `subject`.
pub fn haproxy_config(
    subject: &Subject,
    backends: &[(SocketAddr, u32)],
    listen: SocketAddr,
) -> Result<String> {
    let Some(alg) = subject.peer_algorithm() else {
        bail!("haproxy has no equivalent of policy {}", subject.policy);
    };
    let mut s = format!(
        "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode {}\n  timeout connect 2s\n  \
         timeout client 60s\n  timeout server 60s\nfrontend f\n  bind {listen}\n  default_backend b\n\
         backend b\n  {alg}\n",
        subject.mode
    );
    for (i, (a, w)) in backends.iter().enumerate() {
        s.push_str(&format!("  server b{i} {a} weight {w}\n"));
    }
    Ok(s)
}

/// nginx configuration for `subject` (HTTP mode only).
pub fn nginx_config(
    subject: &Subject,
    backends: &[(SocketAddr, u32)],
    listen: SocketAddr,
    prefix: &Path,
) -> Result<String> {
    let Some(alg) = subject.peer_algorithm() else {
        bail!("nginx has no equivalent of policy {}", subject.policy);
    };
    if subject.mode != Mode::Http {
        bail!("nginx runs in http mode only here (no stream module)");
    }
    let p = PathBuf::from(prefix);
    let mut servers = String::new();
    for (a, w) in backends {
        servers.push_str(&format!("    server {a} weight={w} max_fails=0;\n"));
    }
    Ok(format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log stderr warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n\
         fastcgi_temp_path {p}/tmp;\n  uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n\
         upstream b {{\n    {alg}\n{servers}    keepalive 64;\n  }}\n\
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://b;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        pid = p.join("nginx.pid").display(),
        p = p.display(),
    ))
}
