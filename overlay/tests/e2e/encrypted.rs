//! Encrypted networks: VXLAN over the WireGuard mesh, shoal's device beside
//! a hand-made wireguard-go peer, peers reconciled in place, `down`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shoal_tests::cmd::{exec_in, ip_in, output, run};
use shoal_tests::sock::{connect, echo, listen, read_n, serve_echo};
use shoal_tests::{Lab, Proc};

use crate::mesh::{device, run_node, sec_config, two_sec, wg_peers, Keys, MeshPeer, T1};
use crate::support::{ok, shoal, Files};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The backend line `run` prints first: a userspace or kernel device.
fn assert_backend_reported(seen: &[String], dev: &str) {
    let line = seen
        .iter()
        .find(|l| l.starts_with("wireguard: "))
        .unwrap_or_else(|| panic!("no wireguard: line in {seen:?}"));
    assert!(
        line.contains(&format!("{dev} is a userspace device"))
            || line.contains(&format!("{dev} is a kernel device")),
        "{line}"
    );
}

/// A capture of UDP on the underlay bridge, read back after it stops.
struct Capture {
    proc: Proc,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(underlay: &str, file: &Path) -> Capture {
        let f = file.to_str().unwrap();
        let proc = Proc::spawn(
            "ip",
            &[
                "netns", "exec", underlay, "tcpdump", "-i", "ubr0", "-nn", "-U", "-w", f, "udp",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !file.exists() {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Capture {
            proc,
            file: file.to_path_buf(),
        }
    }

    /// Stops the capture; returns one line per packet.
    fn packets(mut self) -> Vec<String> {
        self.proc.stop(Duration::from_secs(3));
        let out = output("tcpdump", &["-r", self.file.to_str().unwrap(), "-nn"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn an_encrypted_network_carries_tcp_and_the_underlay_sees_no_clear_vxlan() {
    let mut lab = Lab::new();
    let t = two_sec(&mut lab);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &sec_config(&t.n1, &t.s1));
    let f2 = files.write("n2.toml", &sec_config(&t.n2, &t.s2));
    let (_r1, _o1, seen) = run_node(&mut lab, &t.n1, &f1);
    let (_r2, _o2, _) = run_node(&mut lab, &t.n2, &f2);
    let (dev1, _) = device(&t.n1);
    assert_backend_reported(&seen, &dev1);
    // MTU: 1500 underlay - 80 WireGuard - 50 VXLAN
    let link = ip_in(&t.c1, &["-o", "link", "show", "eth0"]);
    assert!(link.contains(" mtu 1370 "), "{link}");
    let wg = ip_in(&t.n1.name, &["-o", "link", "show", &dev1]);
    assert!(wg.contains(" mtu 1420 "), "{wg}");
    let vx = ip_in(
        &t.n1.sandbox("sec"),
        &["-d", "-o", "link", "show", "vxlan0"],
    );
    assert!(
        vx.contains("local 100.96.0.1"),
        "VXLAN sends from the tunnel address: {vx}"
    );

    let capture = Capture::start(lab.underlay(), &files.write("cap.pcap", ""));
    serve_echo(listen(&t.c2, addr("10.78.0.12:7000")), "c2");
    let mut s = connect(&t.c1, addr("10.78.0.12:7000"), None).expect("c1 -> c2 over the mesh");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    echo(&mut s, &payload).expect("1 MB echoed through WireGuard");
    drop(s);
    let packets = capture.packets();
    let wg_packets = packets.iter().filter(|p| p.contains(".51820")).count();
    let clear: Vec<&String> = packets.iter().filter(|p| p.contains(".4789")).collect();
    assert!(
        wg_packets > 100,
        "the flow crossed the underlay as WireGuard: {wg_packets} packets"
    );
    assert!(
        clear.is_empty(),
        "clear VXLAN on the underlay: {:?}",
        &clear[..clear.len().min(3)]
    );
}

#[test]
fn shoal_interoperates_with_a_hand_made_wireguard_go_peer() {
    let mut lab = Lab::new();
    let t = two_sec(&mut lab);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &sec_config(&t.n1, &t.s1));
    let (_r1, _o1, _) = run_node(&mut lab, &t.n1, &f1);

    // n2 by hand: wireguard-go, wg, and an iproute2 VXLAN + bridge
    let n2 = t.n2.name.as_str();
    let gdev = format!("{}g", lab.prefix());
    lab.remove_on_drop(format!("/var/run/wireguard/{gdev}.sock"));
    let mut wggo = Proc::spawn("ip", &["netns", "exec", n2, "wireguard-go", "-f", &gdev]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(&format!("/var/run/wireguard/{gdev}.sock")).exists() {
        if Instant::now() > deadline {
            let (_, err) = wggo.stop(Duration::from_secs(1));
            panic!("wireguard-go did not start: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = files.write("n2.key", &t.s2.keys.private);
    let endpoint = format!("{}:51820", t.n1.ip);
    run(
        "wg",
        &[
            "set",
            &gdev,
            "private-key",
            key.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &t.s1.keys.public,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "100.96.0.1/32",
        ],
    );
    ip_in(n2, &["addr", "add", "100.96.0.2/24", "dev", &gdev]);
    ip_in(n2, &["link", "set", &gdev, "mtu", "1420", "up"]);
    ip_in(
        n2,
        &[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "5000",
            "local",
            "100.96.0.2",
            "dstport",
            "4789",
            "nolearning",
        ],
    );
    ip_in(n2, &["link", "add", "hbr0", "type", "bridge"]);
    for l in ["vx0", "hbr0"] {
        ip_in(n2, &["link", "set", l, "mtu", "1370", "up"]);
    }
    ip_in(n2, &["link", "set", "vx0", "master", "hbr0"]);
    ip_in(
        n2,
        &[
            "link", "add", "hc2", "mtu", "1370", "type", "veth", "peer", "name", "eth0", "mtu",
            "1370", "netns", &t.c2,
        ],
    );
    ip_in(n2, &["link", "set", "hc2", "master", "hbr0", "up"]);
    ip_in(
        &t.c2,
        &["link", "set", "eth0", "address", "02:42:0a:4e:00:0c", "up"],
    );
    ip_in(&t.c2, &["addr", "add", "10.78.0.12/24", "dev", "eth0"]);
    ip_in(
        &t.c2,
        &[
            "neigh",
            "add",
            "10.78.0.11",
            "lladdr",
            "02:42:0a:4e:00:0b",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    run(
        "bridge",
        &[
            "-n",
            n2,
            "fdb",
            "append",
            "02:42:0a:4e:00:0b",
            "dev",
            "vx0",
            "dst",
            "100.96.0.1",
            "self",
            "permanent",
        ],
    );

    serve_echo(listen(&t.c2, addr("10.78.0.12:7000")), "c2");
    let mut s =
        connect(&t.c1, addr("10.78.0.12:7000"), None).expect("shoal node -> wireguard-go node");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    echo(&mut s, &vec![5u8; 300_000]).expect("echo across the two implementations");
    serve_echo(listen(&t.c1, addr("10.78.0.11:7001")), "c1");
    let mut s =
        connect(&t.c2, addr("10.78.0.11:7001"), None).expect("wireguard-go node -> shoal node");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c1");
    let shown = run("wg", &["show", &gdev, "latest-handshakes"]);
    assert!(shown.contains(&t.s1.keys.public), "{shown}");
    assert!(
        !shown.trim().ends_with("\t0"),
        "a handshake happened: {shown}"
    );
}

#[test]
fn peers_change_in_place_on_reapply_and_the_flow_survives() {
    let mut lab = Lab::new();
    let t = two_sec(&mut lab);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &sec_config(&t.n1, &t.s1));
    let f2 = files.write("n2.toml", &sec_config(&t.n2, &t.s2));
    let (r1, o1, _) = run_node(&mut lab, &t.n1, &f1);
    let (_r2, _o2, _) = run_node(&mut lab, &t.n2, &f2);
    let (dev1, _) = device(&t.n1);
    serve_echo(listen(&t.c2, addr("10.78.0.12:7000")), "c2");
    let mut flow = connect(&t.c1, addr("10.78.0.12:7000"), None).unwrap();
    assert_eq!(read_n(&mut flow, 2).unwrap(), b"c2");
    echo(&mut flow, b"before").unwrap();

    // add a third node's peer: only that peer is touched
    let n3 = Keys::new();
    let mut s1 = t.s1.clone();
    s1.peers.push(MeshPeer {
        public: n3.public.clone(),
        endpoint: "198.18.0.3:51820".into(),
        tunnel_ip: "100.96.0.3".parse().unwrap(),
    });
    files.write("n1.toml", &sec_config(&t.n1, &s1));
    r1.signal(Signal::SIGHUP);
    let seen = o1.wait_for("reloaded").join("\n");
    let seen = seen + "\n" + &o1.wait_for("node: wg set").join("\n");
    assert!(
        seen.contains(&format!(
            "peer {} endpoint 198.18.0.3:51820 allowed-ips 100.96.0.3/32",
            n3.public
        )),
        "{seen}"
    );
    assert!(
        !seen.contains(&t.s2.keys.public),
        "the unchanged peer is not touched: {seen}"
    );
    let peers = wg_peers(&dev1);
    assert!(
        peers.contains(&n3.public) && peers.contains(&t.s2.keys.public),
        "{peers:?}"
    );
    echo(&mut flow, b"after adding a peer").unwrap();

    // change it, then remove it, from another process (the device lives in `run`)
    s1.peers[1].endpoint = "198.18.0.3:51999".into();
    let out = ok("apply", &files.write("n1b.toml", &sec_config(&t.n1, &s1)));
    assert!(
        out.contains(&format!("peer {} endpoint 198.18.0.3:51999", n3.public)),
        "{out}"
    );
    let ep = run("wg", &["show", &dev1, "endpoints"]);
    assert!(ep.contains("198.18.0.3:51999"), "{ep}");
    let out = ok("apply", &f1_without_n3(&files, &t));
    assert!(
        out.contains(&format!("wg set {dev1} peer {} remove", n3.public)),
        "{out}"
    );
    assert_eq!(wg_peers(&dev1), vec![t.s2.keys.public.clone()]);
    let again = ok("apply", &f1_without_n3(&files, &t));
    assert!(again.ends_with("no changes\n"), "{again}");
    echo(&mut flow, &vec![9u8; 200_000]).expect("the flow survived every peer change");
}

fn f1_without_n3(files: &Files, t: &crate::mesh::TwoSec) -> std::path::PathBuf {
    files.write("n1c.toml", &sec_config(&t.n1, &t.s1))
}

#[test]
fn apply_alone_refuses_a_userspace_device_and_changes_nothing() {
    let mut lab = Lab::new();
    let t = two_sec(&mut lab);
    let files = Files::new(&lab);
    // The userspace backend asked for by name, so the refusal is tested
    // on a machine with the kernel module too (`auto` would pick it there).
    let config =
        sec_config(&t.n1, &t.s1).replace("[wireguard]\n", "[wireguard]\nbackend = \"userspace\"\n");
    let f1 = files.write("n1.toml", &config);
    let (dev1, sock1) = device(&t.n1);
    lab.remove_on_drop(&sock1);
    let o = shoal(&["apply", f1.to_str().unwrap()]);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(
        o.stderr
            .contains(&format!("{dev1} must be a userspace one"))
            && o.stderr.contains("shoal-overlay run"),
        "{}",
        o.stderr
    );
    assert!(
        !lab.namespaces().iter().any(|n| n.starts_with("shoal.")),
        "nothing half-applied"
    );
    assert!(!ip_in(&t.n1.name, &["-o", "link"]).contains(&dev1));
    let d = ok("diff", &f1);
    assert!(
        d.starts_with(&format!("wireguard: {dev1} is a userspace device")),
        "{d}"
    );
    assert!(!Path::new(&sock1).exists());
}

#[test]
fn stopping_run_or_down_leaves_no_device_and_no_socket() {
    let mut lab = Lab::new();
    let t = two_sec(&mut lab);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &sec_config(&t.n1, &t.s1));
    let (dev1, sock1) = device(&t.n1);
    let (mut r1, _o1, _) = run_node(&mut lab, &t.n1, &f1);
    assert!(Path::new(&sock1).exists());
    // SIGTERM: run exits 0; its device and socket go with it, the sandbox stays
    let (code, err) = r1.stop(Duration::from_secs(8));
    assert_eq!(code, Some(0), "{err}");
    assert!(!Path::new(&sock1).exists(), "socket left after run exited");
    assert!(!ip_in(&t.n1.name, &["-o", "link"]).contains(&dev1));
    assert!(lab.namespaces().contains(&t.n1.sandbox("sec")));
    // a new run rebuilds the device; `down` from outside removes everything
    let (mut r1, o1, _) = run_node(&mut lab, &t.n1, &f1);
    assert!(ip_in(&t.n1.name, &["-o", "link"]).contains(&dev1));
    let out = ok("down", &f1);
    assert!(
        out.contains(&format!("stop userspace WireGuard {dev1}")),
        "{out}"
    );
    assert!(!Path::new(&sock1).exists(), "socket left after down");
    assert!(
        !ip_in(&t.n1.name, &["-o", "link"]).contains(&dev1),
        "device left after down"
    );
    assert!(!lab.namespaces().iter().any(|n| n.starts_with("shoal.")));
    o1.wait_for("wireguard: userspace device");
    let (code, _) = r1.stop(Duration::from_secs(5));
    assert_eq!(
        code,
        Some(0),
        "run exits once the device it hosts was taken down"
    );
    let links = ip_in(&t.n1.name, &["-o", "link"]);
    assert!(
        !links.contains("shoal:") && !links.contains("vxlan"),
        "{links}"
    );
    assert_eq!(ok("down", &f1), "no changes\n");
    let udp = exec_in(&t.n1.name, "ss", &["-uln"]);
    assert!(!udp.contains(":51820") && !udp.contains(":4789"), "{udp}");
    let routes = ip_in(&t.n1.name, &["route", "show", "type", "blackhole"]);
    assert!(routes.trim().is_empty(), "guard left after down: {routes}");
    let _ = T1;
}

#[test]
fn with_the_device_down_nothing_leaks_in_clear() {
    let mut lab = Lab::new();
    let t = two_sec(&mut lab);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &sec_config(&t.n1, &t.s1));
    let f2 = files.write("n2.toml", &sec_config(&t.n2, &t.s2));
    let (mut r1, _o1, _) = run_node(&mut lab, &t.n1, &f1);
    let (_r2, _o2, _) = run_node(&mut lab, &t.n2, &f2);
    serve_echo(listen(&t.c2, addr("10.78.0.12:7000")), "c2");
    connect(&t.c1, addr("10.78.0.12:7000"), None).expect("up");
    // n1's device goes down while its address stays: its prefix route goes,
    // and a default route would now carry the VXLAN packets for 100.96.0.2
    // onto the underlay in clear, but for the guard route
    let (dev1, _) = device(&t.n1);
    ip_in(
        &t.n1.name,
        &["route", "add", "default", "via", "198.18.0.2"],
    );
    ip_in(&t.n1.name, &["link", "set", &dev1, "down"]);
    let capture = Capture::start(lab.underlay(), &files.write("cap.pcap", ""));
    assert!(
        connect(&t.c1, addr("10.78.0.12:7000"), None).is_err(),
        "no tunnel, no traffic"
    );
    let clear: Vec<String> = capture
        .packets()
        .into_iter()
        .filter(|p| p.contains(".4789"))
        .collect();
    assert!(
        clear.is_empty(),
        "clear VXLAN with the device down: {clear:?}"
    );
    // its `run` stops: the device goes, the guard stays
    let (code, _) = r1.stop(Duration::from_secs(8));
    assert_eq!(code, Some(0));
    let guard = ip_in(&t.n1.name, &["route", "show", "type", "blackhole"]);
    assert!(guard.contains("blackhole 100.96.0.0/24"), "{guard}");
    // back up: the device's own route wins over the guard again
    let (_r1, _o1, _) = run_node(&mut lab, &t.n1, &f1);
    let mut s = connect(&t.c1, addr("10.78.0.12:7000"), None).expect("up again");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    assert!(ok("down", &f1).contains("ip route del blackhole 100.96.0.0/24"));
    let routes = ip_in(&t.n1.name, &["route", "show", "type", "blackhole"]);
    assert!(routes.trim().is_empty(), "{routes}");
}
