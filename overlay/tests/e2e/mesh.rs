//! Fixtures for encrypted networks: keys, mesh configs, shoal's device
//! names, and `run` processes hosting userspace devices.

use std::net::Ipv4Addr;
use std::path::Path;

use shoal_overlay::names::Names;
use shoal_tests::cmd::{output, run};
use shoal_tests::{Lab, Node, Proc};

use crate::support::{Lines, BIN};

/// A WireGuard key pair, made by `wg`.
#[derive(Clone)]
pub struct Keys {
    pub private: String,
    pub public: String,
}

impl Keys {
    pub fn new() -> Keys {
        let private = run("wg", &["genkey"]).trim().to_string();
        let public = pubkey(&private);
        Keys { private, public }
    }
}

fn pubkey(private: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A mesh peer as written in a node's file.
#[derive(Clone)]
pub struct MeshPeer {
    pub public: String,
    pub endpoint: String,
    pub tunnel_ip: Ipv4Addr,
}

/// One node's view of the encrypted network `sec` (10.78.0.0/24, VNI 5000).
#[derive(Clone)]
pub struct SecNode {
    pub keys: Keys,
    pub tunnel_ip: Ipv4Addr,
    pub peers: Vec<MeshPeer>,
    /// (id, container netns, ip)
    pub endpoints: Vec<(String, String, String)>,
    /// (ip, node tunnel ip)
    pub remotes: Vec<(String, Ipv4Addr)>,
}

/// The TOML for `node` with the mesh and network `sec`.
pub fn sec_config(node: &Node, s: &SecNode) -> String {
    let mut t = format!(
        "[node]\nname = \"{0}\"\nnetns = \"{0}\"\nunderlay_ip = \"{1}\"\n\n[wireguard]\nprivate_key = \"{2}\"\nlisten_port = 51820\ntunnel_ip = \"{3}/24\"\n",
        node.name, node.ip, s.keys.private, s.tunnel_ip
    );
    for p in &s.peers {
        t += &format!(
            "\n[[wireguard.peer]]\npublic_key = \"{}\"\nendpoint = \"{}\"\ntunnel_ip = \"{}\"\n",
            p.public, p.endpoint, p.tunnel_ip
        );
    }
    t += "\n[[network]]\nname = \"sec\"\nsubnet = \"10.78.0.0/24\"\ngateway = \"10.78.0.1\"\nvni = 5000\nencrypted = true\n";
    for (id, ns, ip) in &s.endpoints {
        t += &format!("\n[[network.endpoint]]\nid = \"{id}\"\nnetns = \"{ns}\"\nip = \"{ip}\"\n");
    }
    for (ip, node_ip) in &s.remotes {
        t += &format!("\n[[network.remote]]\nip = \"{ip}\"\nnode_ip = \"{node_ip}\"\n");
    }
    t
}

/// shoal's WireGuard device for `node`, and its UAPI socket.
pub fn device(node: &Node) -> (String, String) {
    let dev = Names::new(&node.name).wireguard();
    let sock = format!("/var/run/wireguard/{dev}.sock");
    (dev, sock)
}

/// `shoal-overlay run FILE` for `node`, waited for until `ready`. The
/// lab removes the node's UAPI socket in case the process is killed.
pub fn run_node(lab: &mut Lab, node: &Node, file: &Path) -> (Proc, Lines, Vec<String>) {
    lab.remove_on_drop(device(node).1);
    let mut p = Proc::spawn(BIN, &["run", file.to_str().unwrap()]);
    let lines = Lines::of(&mut p);
    let seen = lines.wait_for("ready");
    (p, lines, seen)
}

/// `wg show DEV dump` lines of the peers (public key first).
pub fn wg_peers(dev: &str) -> Vec<String> {
    let out = output("wg", &["show", dev, "peers"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The standard two encrypted nodes: c1 10.78.0.11 on n1 (tunnel
/// 100.96.0.1), c2 10.78.0.12 on n2 (100.96.0.2).
pub struct TwoSec {
    pub n1: Node,
    pub n2: Node,
    pub c1: String,
    pub c2: String,
    pub s1: SecNode,
    pub s2: SecNode,
}

pub const T1: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
pub const T2: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);

pub fn two_sec(lab: &mut Lab) -> TwoSec {
    let t = crate::support::two_nodes(lab, 1500);
    let (k1, k2) = (Keys::new(), Keys::new());
    let s1 = SecNode {
        keys: k1.clone(),
        tunnel_ip: T1,
        peers: vec![MeshPeer {
            public: k2.public.clone(),
            endpoint: format!("{}:51820", t.n2.ip),
            tunnel_ip: T2,
        }],
        endpoints: vec![("web1".into(), t.c1.clone(), "10.78.0.11".into())],
        remotes: vec![("10.78.0.12".into(), T2)],
    };
    let s2 = SecNode {
        keys: k2,
        tunnel_ip: T2,
        peers: vec![MeshPeer {
            public: k1.public,
            endpoint: format!("{}:51820", t.n1.ip),
            tunnel_ip: T1,
        }],
        endpoints: vec![("web2".into(), t.c2.clone(), "10.78.0.12".into())],
        remotes: vec![("10.78.0.11".into(), T1)],
    };
    TwoSec {
        n1: t.n1,
        n2: t.n2,
        c1: t.c1,
        c2: t.c2,
        s1,
        s2,
    }
}
