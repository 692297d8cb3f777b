//! Traffic through the datapath: across nodes, to VIPs, from lb addresses.

use std::net::SocketAddr;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use shoal_tests::cmd::{exec_in, ip_in};
use shoal_tests::sock::{connect, echo, listen, read_n, serve_echo};
use shoal_tests::Lab;

use crate::support::{config, ok, two_nodes, Files, N1_IP, N2_IP};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn mtu_of(ns: &str, dev: &str) -> u32 {
    let out = ip_in(ns, &["-o", "link", "show", dev]);
    let rest = out.split(" mtu ").nth(1).expect("mtu in ip output");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn containers_on_two_nodes_talk_tcp() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    ok("apply", &files.write("n1.toml", &config(&t.n1, &t.net1)));
    ok("apply", &files.write("n2.toml", &config(&t.n2, &t.net2)));
    assert_eq!(
        mtu_of(&t.c1, "eth0"),
        1450,
        "1500-byte underlay minus VXLAN"
    );
    assert!(ip_in(&t.c1, &["-o", "link", "show", "eth0"]).contains("02:42:0a:4d:00:0b"));
    serve_echo(listen(&t.c2, addr("10.77.0.12:7000")), "c2");
    let mut s = connect(&t.c1, addr("10.77.0.12:7000"), None).expect("c1 -> c2 connects");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    echo(&mut s, &payload).expect("1 MB echoed across nodes");
    // and the other way round
    serve_echo(listen(&t.c1, addr("10.77.0.11:7001")), "c1");
    let mut s = connect(&t.c2, addr("10.77.0.11:7001"), None).expect("c2 -> c1 connects");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c1");
}

#[test]
fn mtu_follows_a_jumbo_underlay() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 9000);
    let files = Files::new(&lab);
    ok("apply", &files.write("n1.toml", &config(&t.n1, &t.net1)));
    ok("apply", &files.write("n2.toml", &config(&t.n2, &t.net2)));
    for (ns, dev) in [(t.c1.as_str(), "eth0"), (t.c2.as_str(), "eth0")] {
        assert_eq!(mtu_of(ns, dev), 8950, "{ns}");
    }
    assert_eq!(mtu_of(&t.n1.sandbox("front"), "vxlan0"), 8950);
    serve_echo(listen(&t.c2, addr("10.77.0.12:7000")), "c2");
    let mut s = connect(&t.c1, addr("10.77.0.12:7000"), None).unwrap();
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    echo(&mut s, &vec![7u8; 2_000_000]).expect("2 MB echoed in jumbo segments");
}

#[test]
fn a_vip_is_answered_by_the_local_node() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    ok("apply", &files.write("n1.toml", &config(&t.n1, &t.net1)));
    ok("apply", &files.write("n2.toml", &config(&t.n2, &t.net2)));
    serve_echo(listen(&t.n1.sandbox("front"), addr("10.77.0.200:80")), "n1");
    serve_echo(listen(&t.n2.sandbox("front"), addr("10.77.0.200:80")), "n2");
    let mut s = connect(&t.c1, addr("10.77.0.200:80"), None).expect("c1 -> VIP");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"n1");
    let mut s = connect(&t.c2, addr("10.77.0.200:80"), None).expect("c2 -> VIP");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"n2");
}

#[test]
fn the_lb_address_round_trip_comes_home() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    ok("apply", &files.write("n1.toml", &config(&t.n1, &t.net1)));
    ok("apply", &files.write("n2.toml", &config(&t.n2, &t.net2)));
    serve_echo(listen(&t.c2, addr("10.77.0.12:7000")), "c2");
    // n1's sandbox (where its proxy lives) reaches a replica on n2 from its
    // own lb address; the reply must come back to n1, not to n2's gateway.
    let mut s = connect(
        &t.n1.sandbox("front"),
        addr("10.77.0.12:7000"),
        Some(addr("10.77.0.251:0")),
    )
    .expect("n1 lb address -> c2");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    echo(&mut s, b"round trip").unwrap();
    assert_eq!(
        s.local_addr().unwrap(),
        addr(&format!("10.77.0.251:{}", s.local_addr().unwrap().port()))
    );
}

#[test]
fn the_vxlan_socket_stays_in_the_node_namespace() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    ok("apply", &files.write("n1.toml", &config(&t.n1, &t.net1)));
    let udp = exec_in(&t.n1.name, "ss", &["-uln"]);
    assert!(udp.contains(":4789"), "node netns listens on 4789: {udp}");
    let sb = t.n1.sandbox("front");
    let udp = exec_in(&sb, "ss", &["-uln"]);
    assert!(
        !udp.contains(":4789"),
        "the sandbox holds no VXLAN socket: {udp}"
    );
    let vx = ip_in(&sb, &["-d", "-o", "link", "show", "vxlan0"]);
    for want in [
        "vxlan id 4096",
        "local 198.18.0.1",
        "dstport 4789",
        "nolearning",
        "proxy",
        "master br0",
    ] {
        assert!(vx.contains(want), "{want} in {vx}");
    }
}

#[test]
fn traffic_follows_the_remote_entries_and_nothing_else() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let f1 = files.write("n1.toml", &config(&t.n1, &t.net1));
    ok("apply", &f1);
    ok("apply", &files.write("n2.toml", &config(&t.n2, &t.net2)));
    serve_echo(listen(&t.c2, addr("10.77.0.12:7000")), "c2");
    let mut s = connect(&t.c1, addr("10.77.0.12:7000"), None).unwrap();
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
    // n1 forgets c2: no flooding, no learning, so c1 can no longer reach it
    let mut net1 = t.net1.clone();
    net1.remotes.retain(|(ip, _)| *ip != "10.77.0.12");
    ok("apply", &files.write("n1-less.toml", &config(&t.n1, &net1)));
    let started = Instant::now();
    assert!(
        connect(&t.c1, addr("10.77.0.12:7000"), None).is_err(),
        "c2 reachable without its entries"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    ok("apply", &f1);
    let mut s = connect(&t.c1, addr("10.77.0.12:7000"), None).expect("reachable again");
    assert_eq!(read_n(&mut s, 2).unwrap(), b"c2");
}

#[test]
fn three_nodes_form_a_full_mesh() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let n3_ip = Ipv4Addr::new(198, 18, 0, 3);
    let n3 = lab.node("n3", n3_ip);
    let c3 = lab.container("c3");
    let files = Files::new(&lab);
    let (mut net1, mut net2) = (t.net1.clone(), t.net2.clone());
    net1.remotes.push(("10.77.0.13", n3_ip));
    net2.remotes.push(("10.77.0.13", n3_ip));
    let net3 = crate::support::Net {
        lb: Some("10.77.0.253"),
        vips: vec!["10.77.0.200"],
        endpoints: vec![("web3".into(), c3.clone(), "10.77.0.13")],
        remotes: vec![("10.77.0.11", N1_IP), ("10.77.0.12", N2_IP)],
    };
    ok("apply", &files.write("n1.toml", &config(&t.n1, &net1)));
    ok("apply", &files.write("n2.toml", &config(&t.n2, &net2)));
    ok("apply", &files.write("n3.toml", &config(&n3, &net3)));
    let hosts = [
        (&t.c1, "10.77.0.11"),
        (&t.c2, "10.77.0.12"),
        (&c3, "10.77.0.13"),
    ];
    for (ns, ip) in hosts {
        serve_echo(listen(ns, addr(&format!("{ip}:7000"))), "ok");
    }
    for (from, _) in hosts {
        for (to_ns, to) in hosts {
            if from == to_ns {
                continue;
            }
            let mut s = connect(from, addr(&format!("{to}:7000")), None)
                .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
            assert_eq!(read_n(&mut s, 2).unwrap(), b"ok");
            echo(&mut s, b"mesh").unwrap();
        }
    }
}
