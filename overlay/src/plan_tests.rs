use super::*;
use crate::config::tests::ISSUE_EXAMPLE;
use crate::config::Config;
use crate::desired;

fn want(text: &str) -> BTreeMap<String, Sandbox> {
    let c = Config::parse(text).unwrap();
    let mtus = c.networks.iter().map(|n| (n.name.clone(), 1450)).collect();
    desired::desired(&c, &mtus)
}

fn current(sandboxes: BTreeMap<String, Sandbox>) -> NodeState {
    NodeState {
        sandboxes,
        strays: Vec::new(),
        mesh: None,
        guards: Default::default(),
    }
}

fn steps(plan: &Plan) -> Vec<String> {
    plan.items.iter().map(|i| i.to_string()).collect()
}

#[test]
fn from_nothing_builds_everything_in_order() {
    let plan = diff(&NodeState::default(), &want(ISSUE_EXAMPLE));
    assert_eq!(
        steps(&plan),
        vec![
            "front: ip netns add <sandbox>; ip link set lo up",
            "front: ip link add br0 type bridge mtu 1450 address 02:42:0a:4d:00:fb; ip link set br0 up",
            "front: ip addr add 10.77.0.1/24 dev br0",
            "front: ip addr add 10.77.0.200/32 dev br0",
            "front: ip addr add 10.77.0.251/32 dev br0",
            "front: ip link add vxlan0 type vxlan id 4096 local 198.18.0.1 dstport 4789 nolearning proxy mtu 1450 (in the node netns, then moved); ip link set vxlan0 master br0 up",
            "front: ip neigh replace 10.77.0.12 lladdr 02:42:0a:4d:00:0c dev vxlan0 nud permanent",
            "front: bridge fdb replace 02:42:0a:4d:00:0c dev vxlan0 dst 198.18.0.2 self permanent",
            "front: attach endpoint `web1`: veth to br0, eth0 in netns c1 with 10.77.0.11/24 address 02:42:0a:4d:00:0b mtu 1450, default via 10.77.0.1",
        ]
    );
}

#[test]
fn matching_state_plans_nothing() {
    let w = want(ISSUE_EXAMPLE);
    assert!(diff(&current(w.clone()), &w).is_empty());
}

#[test]
fn changed_remotes_and_vips_plan_exactly_the_difference() {
    let before = want(ISSUE_EXAMPLE);
    let text = ISSUE_EXAMPLE
        .replace("vips = [\"10.77.0.200\"]", "vips = [\"10.77.0.201\"]")
        .replace(
            "ip = \"10.77.0.12\"\nmac = \"02:42:0a:4d:00:0c\"\nnode_ip = \"198.18.0.2\"",
            "ip = \"10.77.0.13\"\nnode_ip = \"198.18.0.3\"",
        );
    let plan = diff(&current(before), &want(&text));
    assert_eq!(
        steps(&plan),
        vec![
            "front: ip addr del 10.77.0.200/32 dev br0",
            "front: ip addr add 10.77.0.201/32 dev br0",
            "front: ip neigh del 10.77.0.12 dev vxlan0",
            "front: ip neigh replace 10.77.0.13 lladdr 02:42:0a:4d:00:0d dev vxlan0 nud permanent",
            "front: bridge fdb del 02:42:0a:4d:00:0c dev vxlan0 dst 198.18.0.2 self",
            "front: bridge fdb replace 02:42:0a:4d:00:0d dev vxlan0 dst 198.18.0.3 self permanent",
        ]
    );
}

#[test]
fn a_remote_moving_node_replaces_only_its_fdb_entry() {
    let before = want(ISSUE_EXAMPLE);
    let plan = diff(
        &current(before),
        &want(&ISSUE_EXAMPLE.replace("node_ip = \"198.18.0.2\"", "node_ip = \"198.18.0.9\"")),
    );
    assert_eq!(
        steps(&plan),
        vec![
            "front: bridge fdb replace 02:42:0a:4d:00:0c dev vxlan0 dst 198.18.0.9 self permanent"
        ]
    );
}

#[test]
fn a_changed_endpoint_is_detached_then_attached() {
    let before = want(ISSUE_EXAMPLE);
    let plan = diff(
        &current(before),
        &want(&ISSUE_EXAMPLE.replace("ip = \"10.77.0.11\"", "ip = \"10.77.0.21\"")),
    );
    let s = steps(&plan);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(
        s[0],
        "front: detach endpoint `web1` (ip link del <its veth>)"
    );
    assert!(s[1].starts_with(
        "front: attach endpoint `web1`: veth to br0, eth0 in netns c1 with 10.77.0.21/24"
    ));
}

#[test]
fn a_broken_vxlan_is_rebuilt_with_all_its_entries() {
    let w = want(ISSUE_EXAMPLE);
    let mut have = w.clone();
    let sb = have.get_mut("front").unwrap();
    sb.vxlan.as_mut().unwrap().info.learning = true;
    let s = steps(&diff(&current(have), &w));
    assert_eq!(s[0], "front: ip link del vxlan0");
    assert!(s[1].starts_with("front: ip link add vxlan0"));
    assert!(s[2].starts_with("front: ip neigh replace 10.77.0.12"));
    assert!(s[3].starts_with("front: bridge fdb replace 02:42:0a:4d:00:0c"));
    assert_eq!(s.len(), 4);
}

#[test]
fn removed_networks_and_strays_are_torn_down_first() {
    let mut have = current(want(ISSUE_EXAMPLE));
    have.strays.push("s1234x1000".into());
    let text = ISSUE_EXAMPLE.replace("name = \"front\"", "name = \"back\"");
    let s = steps(&diff(&have, &want(&text)));
    assert_eq!(
        s[0],
        "node: ip link del s1234x1000  # stray, marked as shoal's"
    );
    assert_eq!(
        s[1],
        "front: detach endpoint `web1` (ip link del <its veth>)"
    );
    assert_eq!(s[2], "front: ip link del vxlan0");
    assert_eq!(s[3], "front: ip netns delete <sandbox>");
    assert_eq!(s[4], "back: ip netns add <sandbox>; ip link set lo up");
}

#[test]
fn down_removes_every_sandbox() {
    let have = current(want(ISSUE_EXAMPLE));
    let s = steps(&down(&have));
    assert_eq!(s.len(), 3);
    assert_eq!(s[2], "front: ip netns delete <sandbox>");
    assert!(down(&NodeState::default()).is_empty());
}

fn a_mesh() -> Mesh {
    Mesh {
        dev: "s1234wg".into(),
        backend: crate::mesh::Backend::Kernel,
        mtu: 1420,
        up: true,
        addresses: ["100.96.0.1/24".parse().unwrap()].into(),
        config: Some(crate::mesh::MeshConfig {
            public_key: Some([3; 32]),
            listen_port: 51820,
            peers: BTreeMap::new(),
        }),
        private_key: Some(crate::mesh::Secret([1; 32])),
    }
}

#[test]
fn the_mesh_comes_before_the_sandboxes_and_goes_after_them() {
    let plan = diff_node(&NodeState::default(), Some(&a_mesh()), &want(ISSUE_EXAMPLE));
    let s = steps(&plan);
    assert_eq!(
        s[..5],
        [
            "node: ip route replace blackhole 100.96.0.0/24 metric 4293942945  # no clear fallback while the device is down",
            "node: ip link add s1234wg type wireguard mtu 1420; ip link set s1234wg up  # kernel WireGuard",
            "node: ip addr add 100.96.0.1/24 dev s1234wg",
            "node: wg set s1234wg private-key <from the file> listen-port 51820",
            "front: ip netns add <sandbox>; ip link set lo up",
        ]
    );
    assert!(!plan.needs_host(), "a kernel device needs no host");
    let mut built = current(want(ISSUE_EXAMPLE));
    built.mesh = Some(a_mesh());
    built.guards = ["100.96.0.0/24".parse().unwrap()].into();
    assert!(diff_node(&built, Some(&a_mesh()), &want(ISSUE_EXAMPLE)).is_empty());
    // the device gone (its `run` stopped): the guard stays, only the device is rebuilt
    built.mesh = None;
    let s = steps(&diff_node(&built, Some(&a_mesh()), &want(ISSUE_EXAMPLE)));
    assert!(s[0].starts_with("node: ip link add s1234wg"), "{s:?}");
    assert!(!s.iter().any(|l| l.contains("blackhole")), "{s:?}");
    built.mesh = Some(a_mesh());
    let s = steps(&down(&built));
    let n = s.len();
    assert_eq!(
        s[n - 3..],
        [
            "front: ip netns delete <sandbox>",
            "node: ip link del s1234wg",
            "node: ip route del blackhole 100.96.0.0/24 metric 4293942945",
        ]
    );
}
