//! [`Lab`]: one test's hosts, and the guard that removes them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::{ip, ip_in, netns_list, output};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A host: a namespace with `eth0` on the underlay bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The namespace's name, also the node name to give shoal (unique per run).
    pub name: String,
    /// Its underlay address (/24).
    pub ip: Ipv4Addr,
}

impl Node {
    /// The prefix of the sandbox namespaces shoal makes for this node.
    pub fn sandbox(&self, network: &str) -> String {
        format!("shoal.{}.{network}", self.name)
    }
}

/// One test's namespaces. Dropping it (panic included) kills the processes
/// left inside them (replicas netd started) and deletes, in order, the
/// shoal sandboxes and task namespaces of its nodes, its containers, its nodes and the
/// underlay (the kernel then frees every link inside them), and the lock
/// files shoal-overlay keeps for its nodes under /run/shoal, and every file
/// registered with [`Lab::remove_on_drop`] (e.g. WireGuard UAPI sockets).
pub struct Lab {
    prefix: String,
    underlay: String,
    nodes: Vec<Node>,
    containers: Vec<String>,
    files: Vec<std::path::PathBuf>,
}

impl Lab {
    /// A new lab with an underlay namespace holding bridge `ubr0`. Names
    /// start with a prefix unique to this process and lab (e.g. `s3f2a1`).
    pub fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("s{:04x}{n}", std::process::id() & 0xffff);
        let underlay = format!("{prefix}u");
        let lab = Lab {
            prefix,
            underlay,
            nodes: Vec::new(),
            containers: Vec::new(),
            files: Vec::new(),
        };
        ip(&["netns", "add", &lab.underlay]);
        ip_in(&lab.underlay, &["link", "add", "ubr0", "type", "bridge"]);
        ip_in(&lab.underlay, &["link", "set", "ubr0", "up"]);
        lab
    }

    /// This lab's name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The underlay namespace.
    pub fn underlay(&self) -> &str {
        &self.underlay
    }

    /// Adds node `name` (prefixed) at `ip`/24 with a 1500-byte underlay.
    pub fn node(&mut self, name: &str, ip: Ipv4Addr) -> Node {
        self.node_with_mtu(name, ip, 1500)
    }

    /// Adds a node whose underlay link has `mtu`.
    pub fn node_with_mtu(&mut self, name: &str, addr: Ipv4Addr, mtu: u32) -> Node {
        let node = Node {
            name: format!("{}{name}", self.prefix),
            ip: addr,
        };
        ip(&["netns", "add", &node.name]);
        self.nodes.push(node.clone());
        let port = format!("u-{name}");
        let mtu = mtu.to_string();
        let u = self.underlay.as_str();
        ip_in(
            u,
            &[
                "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu",
                &mtu, "netns", &node.name,
            ],
        );
        ip_in(u, &["link", "set", &port, "master", "ubr0", "up"]);
        ip_in(
            &node.name,
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        ip_in(&node.name, &["link", "set", "eth0", "up"]);
        ip_in(&node.name, &["link", "set", "lo", "up"]);
        node
    }

    /// Adds an empty container namespace (prefixed name, `lo` up).
    pub fn container(&mut self, name: &str) -> String {
        let ns = format!("{}{name}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.containers.push(ns.clone());
        ip_in(&ns, &["link", "set", "lo", "up"]);
        ns
    }

    /// Removes `path` (if still there) when the lab is dropped: for files a
    /// test's processes make outside the lab's namespaces, such as a
    /// userspace WireGuard device's machine-wide UAPI socket.
    pub fn remove_on_drop(&mut self, path: impl Into<std::path::PathBuf>) {
        self.files.push(path.into());
    }

    /// Namespaces of this lab still present (including shoal's sandboxes
    /// of its nodes), for leak checks.
    pub fn namespaces(&self) -> Vec<String> {
        netns_list()
            .into_iter()
            .filter(|n| {
                n.starts_with(&self.prefix)
                    || n.starts_with(&format!("shoal.{}", self.prefix))
                    || n.starts_with(&format!("shoal-t.{}", self.prefix))
            })
            .collect()
    }
}

impl Default for Lab {
    fn default() -> Lab {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let sandboxes = format!("shoal.{}", self.prefix);
        let tasks = format!("shoal-t.{}", self.prefix);
        let mut order: Vec<String> = netns_list()
            .into_iter()
            .filter(|n| n.starts_with(&sandboxes) || n.starts_with(&tasks))
            .collect();
        order.extend(self.containers.iter().cloned());
        order.extend(self.nodes.iter().map(|n| n.name.clone()));
        order.push(self.underlay.clone());
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for node in &self.nodes {
            // shoal-overlay's per-node lock file
            let _ = std::fs::remove_file(format!("/run/shoal/{}.lock", node.name));
        }
        for ns in order {
            // Processes still inside (replicas netd started) go first.
            let pids = output("ip", &["netns", "pids", &ns]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let out = output("ip", &["netns", "delete", &ns]);
            if !out.status.success() && !std::thread::panicking() {
                eprintln!(
                    "lab cleanup: ip netns delete {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
}
