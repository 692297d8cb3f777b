use std::collections::BTreeMap;

use super::*;
use crate::mesh::{Mesh, MeshConfig, Peer, Secret};

const A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn peer(ip: &str, port: u16) -> Peer {
    Peer {
        endpoint: Some(format!("198.18.0.2:{port}").parse().unwrap()),
        allowed_ips: [format!("{ip}/32").parse().unwrap()].into(),
    }
}

fn mesh(peers: &[(&str, Peer)]) -> Mesh {
    Mesh {
        dev: "s1234wg".into(),
        backend: Backend::Userspace,
        mtu: 1420,
        up: true,
        addresses: ["100.96.0.1/24".parse().unwrap()].into(),
        config: Some(MeshConfig {
            public_key: Some([7; 32]),
            listen_port: 51820,
            peers: peers
                .iter()
                .map(|(k, p)| (k.to_string(), p.clone()))
                .collect::<BTreeMap<_, _>>(),
        }),
        private_key: None,
    }
}

fn want(peers: &[(&str, Peer)]) -> Mesh {
    Mesh {
        private_key: Some(Secret([1; 32])),
        ..mesh(peers)
    }
}

fn lines(steps: &[MeshStep]) -> Vec<String> {
    steps.iter().map(|s| s.to_string()).collect()
}

#[test]
fn from_nothing_creates_then_configures_and_never_prints_the_key() {
    let steps = diff(None, Some(&want(&[(A, peer("100.96.0.2", 51820))])));
    assert_eq!(
        lines(&steps),
        vec![
            "start userspace WireGuard s1234wg (in this process, UAPI /var/run/wireguard/s1234wg.sock); ip link set s1234wg mtu 1420 up",
            "ip addr add 100.96.0.1/24 dev s1234wg",
            "wg set s1234wg private-key <from the file> listen-port 51820",
            &format!("wg set s1234wg peer {A} endpoint 198.18.0.2:51820 allowed-ips 100.96.0.2/32"),
        ]
    );
    assert!(steps[0].needs_host());
    assert!(!format!("{steps:?}").contains("[1, 1,"), "{steps:?}");
}

#[test]
fn the_same_mesh_needs_nothing() {
    let p = [(A, peer("100.96.0.2", 51820))];
    assert_eq!(diff(Some(&mesh(&p)), Some(&want(&p))), vec![]);
}

#[test]
fn peers_are_added_removed_and_changed_one_by_one() {
    let have = mesh(&[(A, peer("100.96.0.2", 51820))]);
    let w = want(&[
        (A, peer("100.96.0.2", 51821)),
        (B, peer("100.96.0.3", 51820)),
    ]);
    assert_eq!(
        lines(&diff(Some(&have), Some(&w))),
        vec![
            format!("wg set s1234wg peer {A} endpoint 198.18.0.2:51821 allowed-ips 100.96.0.2/32"),
            format!("wg set s1234wg peer {B} endpoint 198.18.0.2:51820 allowed-ips 100.96.0.3/32"),
        ]
    );
    let w = want(&[(B, peer("100.96.0.3", 51820))]);
    assert_eq!(
        lines(&diff(Some(&have), Some(&w))),
        vec![
            format!("wg set s1234wg peer {A} remove"),
            format!("wg set s1234wg peer {B} endpoint 198.18.0.2:51820 allowed-ips 100.96.0.3/32"),
        ]
    );
}

#[test]
fn an_unreadable_or_other_backend_device_is_rebuilt_and_none_wanted_is_deleted() {
    let p = [(A, peer("100.96.0.2", 51820))];
    let mut dead = mesh(&p);
    dead.config = None;
    let steps = lines(&diff(Some(&dead), Some(&want(&p))));
    assert_eq!(
        steps[0],
        "stop userspace WireGuard s1234wg: rm /var/run/wireguard/s1234wg.sock; ip link del s1234wg"
    );
    assert!(steps[1].starts_with("start userspace WireGuard"));
    assert_eq!(steps.len(), 5, "{steps:?}");
    let mut kernel = mesh(&p);
    kernel.backend = Backend::Kernel;
    assert_eq!(
        lines(&diff(Some(&kernel), None)),
        vec!["ip link del s1234wg"]
    );
    let mut other = mesh(&p);
    other.mtu = 1400;
    other.addresses = ["100.96.0.9/24".parse().unwrap()].into();
    assert_eq!(
        lines(&diff(Some(&other), Some(&want(&p)))),
        vec![
            "ip link set s1234wg mtu 1420 up",
            "ip addr del 100.96.0.9/24 dev s1234wg",
            "ip addr add 100.96.0.1/24 dev s1234wg",
        ]
    );
}
