//! The fixtures themselves: hosts are reachable, and everything goes away.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use shoal_tests::cmd::{ip_in, netns_list};
use shoal_tests::sock::{connect, listen, read_n, serve_echo};
use shoal_tests::{Lab, Proc};

#[test]
fn nodes_talk_over_the_underlay_and_nothing_is_left_after_a_panic() {
    let mut prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new();
        prefix = lab.prefix().to_string();
        let n1 = lab.node("n1", Ipv4Addr::new(198, 18, 0, 1));
        let n2 = lab.node_with_mtu("n2", Ipv4Addr::new(198, 18, 0, 2), 9000);
        let c = lab.container("c");
        assert!(ip_in(&n2.name, &["-o", "link", "show", "eth0"]).contains("mtu 9000"));
        assert!(ip_in(&c, &["-o", "link"]).contains("lo"));
        let to: SocketAddr = "198.18.0.2:7000".parse().unwrap();
        serve_echo(listen(&n2.name, to), "n2");
        let mut s = connect(&n1.name, to, None).expect("n1 -> n2 on the underlay");
        assert_eq!(read_n(&mut s, 2).unwrap(), b"n2");
        assert_eq!(lab.namespaces().len(), 4, "{:?}", lab.namespaces());
        panic!("on purpose");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_proc_is_stopped_on_drop() {
    let p = Proc::spawn("sleep", &["30"]);
    let pid = p.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(p);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} survived its guard"
    );
}
