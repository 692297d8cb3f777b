//! Level-triggered reconcile: idempotence, exact convergence, down, and
//! flows that outlive re-applies and restarts of `run`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_tests::cmd::{ip_in, run};
use shoal_tests::sock::{connect, echo, listen, read_n, serve_echo};
use shoal_tests::{snapshot, Lab, Proc};

use crate::support::{config, ok, two_nodes, Files, Lines, BIN, N2_IP};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn applying_twice_changes_nothing() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &config(&t.n1, &t.net1));
    let first = ok("apply", &f1);
    assert!(first.contains("attach endpoint `web1`"), "{first}");
    let spaces = [t.n1.name.clone(), t.n1.sandbox("front"), t.c1.clone()];
    let before: Vec<String> = spaces.iter().map(|ns| snapshot::of(ns)).collect();
    assert_eq!(ok("apply", &f1), "no changes\n");
    assert_eq!(ok("diff", &f1), "no changes\n");
    let after: Vec<String> = spaces.iter().map(|ns| snapshot::of(ns)).collect();
    for (i, ns) in spaces.iter().enumerate() {
        assert_eq!(
            before[i], after[i],
            "kernel state of {ns} changed on a second apply"
        );
    }
}

#[test]
fn a_changed_file_gives_exactly_the_new_state() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let c3 = lab.container("c3");
    let c4 = lab.container("c4");
    let files = Files::new(&lab);
    let n3 = Ipv4Addr::new(198, 18, 0, 3);
    let mut v1 = t.net1.clone();
    v1.vips = vec!["10.77.0.200", "10.77.0.201"];
    v1.endpoints.push(("web3".into(), c3.clone(), "10.77.0.13"));
    v1.remotes.push(("10.77.0.14", N2_IP));
    ok("apply", &files.write("v1.toml", &config(&t.n1, &v1)));
    let mut v2 = t.net1.clone();
    v2.vips = vec!["10.77.0.200", "10.77.0.202"];
    v2.endpoints.push(("web4".into(), c4.clone(), "10.77.0.15"));
    v2.remotes.push(("10.77.0.16", n3));
    let f2 = files.write("v2.toml", &config(&t.n1, &v2));
    let out = ok("apply", &f2);
    assert!(
        out.contains("detach endpoint `web3`") && out.contains("attach endpoint `web4`"),
        "{out}"
    );
    assert!(
        !out.contains("web1"),
        "web1 did not change and must not be touched: {out}"
    );

    let sb = t.n1.sandbox("front");
    assert_eq!(
        lines(&ip_in(&sb, &["neigh", "show", "nud", "permanent"])),
        set(&[
            "10.77.0.12 dev vxlan0 lladdr 02:42:0a:4d:00:0c PERMANENT",
            "10.77.0.16 dev vxlan0 lladdr 02:42:0a:4d:00:10 PERMANENT",
            "10.77.0.252 dev vxlan0 lladdr 02:42:0a:4d:00:fc PERMANENT",
        ])
    );
    let fdb: BTreeSet<String> = run("bridge", &["-n", &sb, "fdb", "show", "dev", "vxlan0"])
        .lines()
        .filter(|l| l.contains(" dst "))
        .map(|l| l.split(" link-netnsid").next().unwrap().to_string())
        .collect();
    assert_eq!(
        fdb,
        set(&[
            "02:42:0a:4d:00:0c dst 198.18.0.2",
            "02:42:0a:4d:00:10 dst 198.18.0.3",
            "02:42:0a:4d:00:fc dst 198.18.0.2",
        ])
    );
    let addrs: BTreeSet<String> = ip_in(&sb, &["-o", "-4", "addr", "show", "dev", "br0"])
        .lines()
        .map(|l| l.split_whitespace().nth(3).unwrap().to_string())
        .collect();
    assert_eq!(
        addrs,
        set(&[
            "10.77.0.1/24",
            "10.77.0.200/32",
            "10.77.0.202/32",
            "10.77.0.251/32"
        ])
    );
    assert!(
        !ip_in(&c3, &["-o", "link"]).contains("eth0"),
        "web3's interface must be gone"
    );
    assert!(ip_in(&c4, &["-o", "-4", "addr"]).contains("10.77.0.15/24"));
    let veths = ip_in(&sb, &["-o", "link", "show", "type", "veth"])
        .lines()
        .count();
    assert_eq!(veths, 2, "one host-side veth per endpoint, nothing stale");
    assert_eq!(ok("diff", &f2), "no changes\n");
}

#[test]
fn down_leaves_nothing_of_shoal_and_everything_else() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &config(&t.n1, &t.net1));
    // things shoal did not create, which it must leave alone
    ip_in(&t.n1.name, &["link", "add", "keepme", "type", "bridge"]);
    ip_in(&t.c1, &["link", "add", "eth1", "type", "bridge"]);
    ok("apply", &f1);
    assert!(lab.namespaces().contains(&t.n1.sandbox("front")));
    let out = ok("down", &f1);
    assert!(out.contains("ip netns delete"), "{out}");
    assert!(
        !lab.namespaces().iter().any(|n| n.starts_with("shoal.")),
        "{:?}",
        lab.namespaces()
    );
    let c1_links = ip_in(&t.c1, &["-o", "link"]);
    assert!(
        !c1_links.contains("eth0") && c1_links.contains("eth1"),
        "{c1_links}"
    );
    let node_links = ip_in(&t.n1.name, &["-o", "link"]);
    assert!(
        node_links.contains("keepme") && !node_links.contains("shoal:"),
        "{node_links}"
    );
    assert!(!node_links.contains("vxlan"), "{node_links}");
    assert_eq!(ok("down", &f1), "no changes\n");
    assert!(ok("diff", &f1).contains("ip netns add"));
}

#[test]
fn a_long_lived_flow_survives_reapply_and_restarts_of_run() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &config(&t.n1, &t.net1));
    let f2 = files.write("n2.toml", &config(&t.n2, &t.net2));
    let mut run1 = Proc::spawn(BIN, &["run", f1.to_str().unwrap()]);
    let out1 = Lines::of(&mut run1);
    out1.wait_for("ready");
    ok("apply", &f2);
    serve_echo(listen(&t.c2, addr("10.77.0.12:7000")), "c2");
    let mut flow = connect(&t.c1, addr("10.77.0.12:7000"), None).unwrap();
    assert_eq!(read_n(&mut flow, 2).unwrap(), b"c2");
    echo(&mut flow, b"before").unwrap();

    // a real change on both nodes: a new VIP and a new remote
    let mut net1 = t.net1.clone();
    net1.vips.push("10.77.0.201");
    net1.remotes.push(("10.77.0.30", N2_IP));
    files.write("n1.toml", &config(&t.n1, &net1));
    run1.signal(Signal::SIGHUP);
    let seen = out1.wait_for("reloaded");
    let mut more = t.net2.clone();
    more.vips.push("10.77.0.201");
    let changed = ok("apply", &files.write("n2.toml", &config(&t.n2, &more)));
    assert!(changed.contains("10.77.0.201/32"), "{changed}");
    echo(&mut flow, b"after re-apply").unwrap();

    // run exits on SIGTERM with 0 and leaves the datapath in place
    let (code, err) = run1.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "run exit; stderr: {err}; stdout: {seen:?}");
    echo(&mut flow, b"with run stopped").unwrap();
    let mut run1 = Proc::spawn(BIN, &["run", f1.to_str().unwrap()]);
    let out1 = Lines::of(&mut run1);
    assert_eq!(
        out1.wait_for("ready"),
        vec!["ready"],
        "a restarted run finds nothing to change"
    );
    echo(&mut flow, b"after restart").unwrap();
    run1.signal(Signal::SIGHUP);
    assert_eq!(out1.wait_for("reloaded"), vec!["reloaded: no changes"]);
    echo(&mut flow, &vec![1u8; 500_000]).unwrap();
}

#[test]
fn a_stray_left_by_a_crash_is_removed_and_nothing_else() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &config(&t.n1, &t.net1));
    ok("apply", &f1);
    // what a crash between creating the VXLAN device and moving it leaves
    ip_in(&t.n1.name, &["link", "add", "stray0", "type", "bridge"]);
    let alias = format!("shoal:{}:front:vxlan", t.n1.name);
    ip_in(&t.n1.name, &["link", "set", "stray0", "alias", &alias]);
    ip_in(&t.n1.name, &["link", "add", "keepme", "type", "bridge"]);
    // another node's mark is not ours either
    ip_in(&t.n1.name, &["link", "add", "other0", "type", "bridge"]);
    ip_in(
        &t.n1.name,
        &[
            "link",
            "set",
            "other0",
            "alias",
            "shoal:someone-else:front:vxlan",
        ],
    );
    assert_eq!(
        ok("apply", &f1),
        "node: ip link del stray0  # stray, marked as shoal's\n"
    );
    let links = ip_in(&t.n1.name, &["-o", "link"]);
    assert!(
        !links.contains("stray0") && links.contains("keepme") && links.contains("other0"),
        "{links}"
    );
}
