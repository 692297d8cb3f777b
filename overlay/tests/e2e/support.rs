//! Running the binary, writing config files, and the standard two-node lab.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use shoal_tests::{Lab, Node, Proc};

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal-overlay");

/// What a run of the binary did.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `shoal-overlay args...` to completion.
pub fn shoal(args: &[&str]) -> Outcome {
    let out = shoal_tests::cmd::output(BIN, args);
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `shoal-overlay SUB FILE` and insists on success.
pub fn ok(sub: &str, file: &Path) -> String {
    let o = shoal(&[sub, file.to_str().unwrap()]);
    assert_eq!(
        o.code,
        Some(0),
        "shoal-overlay {sub} {}: {o:?}",
        file.display()
    );
    o.stdout
}

/// A temporary directory for config files, removed on drop.
pub struct Files(PathBuf);

impl Files {
    pub fn new(lab: &Lab) -> Files {
        let dir = std::env::temp_dir().join(format!("shoal-e2e-{}", lab.prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One network of one node, as the test wants it.
#[derive(Clone, Default)]
pub struct Net {
    pub lb: Option<&'static str>,
    pub vips: Vec<&'static str>,
    /// (id, container netns, ip)
    pub endpoints: Vec<(String, String, &'static str)>,
    /// (ip, node underlay ip)
    pub remotes: Vec<(&'static str, Ipv4Addr)>,
}

/// The TOML for `node` with one network `front` (10.77.0.0/24, VNI 4096).
pub fn config(node: &Node, net: &Net) -> String {
    let mut s = format!(
        "[node]\nname = \"{0}\"\nnetns = \"{0}\"\nunderlay_ip = \"{1}\"\n\n[[network]]\nname = \"front\"\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\nvni = 4096\n",
        node.name, node.ip
    );
    if let Some(lb) = net.lb {
        s += &format!("lb_address = \"{lb}\"\n");
    }
    let vips: Vec<String> = net.vips.iter().map(|v| format!("\"{v}\"")).collect();
    s += &format!("vips = [{}]\n", vips.join(", "));
    for (id, ns, ip) in &net.endpoints {
        s += &format!("\n[[network.endpoint]]\nid = \"{id}\"\nnetns = \"{ns}\"\nip = \"{ip}\"\n");
    }
    for (ip, node_ip) in &net.remotes {
        s += &format!("\n[[network.remote]]\nip = \"{ip}\"\nnode_ip = \"{node_ip}\"\n");
    }
    s
}

/// Two nodes with one container each, every address known to the other:
/// c1 10.77.0.11 on n1 (lb .251), c2 10.77.0.12 on n2 (lb .252), VIP .200.
pub struct TwoNodes {
    pub n1: Node,
    pub n2: Node,
    pub c1: String,
    pub c2: String,
    pub net1: Net,
    pub net2: Net,
}

pub const N1_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const N2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub fn two_nodes(lab: &mut Lab, mtu: u32) -> TwoNodes {
    let n1 = lab.node_with_mtu("n1", N1_IP, mtu);
    let n2 = lab.node_with_mtu("n2", N2_IP, mtu);
    let c1 = lab.container("c1");
    let c2 = lab.container("c2");
    let net1 = Net {
        lb: Some("10.77.0.251"),
        vips: vec!["10.77.0.200"],
        endpoints: vec![("web1".into(), c1.clone(), "10.77.0.11")],
        remotes: vec![("10.77.0.12", N2_IP), ("10.77.0.252", N2_IP)],
    };
    let net2 = Net {
        lb: Some("10.77.0.252"),
        vips: vec!["10.77.0.200"],
        endpoints: vec![("web2".into(), c2.clone(), "10.77.0.12")],
        remotes: vec![("10.77.0.11", N1_IP), ("10.77.0.251", N1_IP)],
    };
    TwoNodes {
        n1,
        n2,
        c1,
        c2,
        net1,
        net2,
    }
}

/// Lines of a child's stdout, readable with a timeout.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn of(proc: &mut Proc) -> Lines {
        let out = proc.child().stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// Waits up to 10 s for a line starting with `prefix`; returns the lines seen.
    pub fn wait_for(&self, prefix: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.0.recv_timeout(Duration::from_secs(10)) {
                Ok(l) => {
                    let done = l.starts_with(prefix);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line starting with {prefix:?}; saw {seen:?}"),
            }
        }
    }
}
