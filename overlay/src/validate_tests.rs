use super::*;
use crate::config::tests::ISSUE_EXAMPLE;

fn check(text: &str) -> Result<(), String> {
    let c = Config::parse(text).map_err(|e| e.to_string())?;
    validate(&c, &|ns| ns != "gone").map_err(|e| e.to_string())
}

fn second_network(extra: &str) -> String {
    format!(
        "{ISSUE_EXAMPLE}\n[[network]]\nname = \"back\"\nsubnet = \"10.78.0.0/24\"\ngateway = \"10.78.0.1\"\nvni = 4097\n{extra}"
    )
}

#[test]
fn the_issue_example_is_valid() {
    check(ISSUE_EXAMPLE).unwrap();
    check(&second_network("")).unwrap();
}

#[test]
fn overlapping_subnets_name_both_networks() {
    let text = second_network("")
        .replace("10.78.0.0/24", "10.77.0.128/25")
        .replace("10.78.0.1", "10.77.0.129");
    let e = check(&text).unwrap_err();
    assert_eq!(
        e,
        "network `back`: subnet 10.77.0.128/25 overlaps subnet 10.77.0.0/24 of network `front`"
    );
}

#[test]
fn a_vni_used_twice_is_named() {
    let e = check(&second_network("").replace("4097", "4096")).unwrap_err();
    assert_eq!(
        e,
        "network `back`: vni 4096 is already used by network `front`"
    );
}

#[test]
fn duplicate_ip_names_both_holders() {
    let e =
        check(&ISSUE_EXAMPLE.replace("ip = \"10.77.0.12\"", "ip = \"10.77.0.11\"")).unwrap_err();
    assert_eq!(
        e,
        "network `front`: 10.77.0.11 is used by both endpoint `web1` and remote 10.77.0.11"
    );
    let e = check(&ISSUE_EXAMPLE.replace("10.77.0.200", "10.77.0.1")).unwrap_err();
    assert_eq!(
        e,
        "network `front`: 10.77.0.1 is used by both gateway and vip 10.77.0.1"
    );
}

#[test]
fn duplicate_mac_names_both_holders() {
    let text = ISSUE_EXAMPLE.replace(
        "ip = \"10.77.0.11\"",
        "ip = \"10.77.0.11\"\nmac = \"02:42:0a:4d:00:0c\"",
    );
    let e = check(&text).unwrap_err();
    assert_eq!(
        e,
        "network `front`: MAC 02:42:0a:4d:00:0c is used by both endpoint `web1` and remote 10.77.0.12"
    );
}

#[test]
fn a_missing_container_netns_is_named() {
    let e = check(&ISSUE_EXAMPLE.replace("netns = \"c1\"", "netns = \"gone\"")).unwrap_err();
    assert_eq!(
        e,
        "endpoint `web1` of network `front`: container netns `gone` does not exist"
    );
    let e = check(&ISSUE_EXAMPLE.replace("netns = \"n1\"", "netns = \"gone\"")).unwrap_err();
    assert_eq!(e, "node `n1`: netns `gone` does not exist");
}

#[test]
fn addresses_outside_the_subnet_are_named() {
    let e = check(&ISSUE_EXAMPLE.replace("10.77.0.200", "10.99.0.200")).unwrap_err();
    assert_eq!(e, "network `front`: vip 10.99.0.200 (10.99.0.200) is not a host address of subnet 10.77.0.0/24");
    let e = check(&ISSUE_EXAMPLE.replace("gateway = \"10.77.0.1\"", "gateway = \"10.77.0.255\""))
        .unwrap_err();
    assert!(
        e.starts_with("network `front`: gateway (10.77.0.255)"),
        "{e}"
    );
}

#[test]
fn two_endpoints_into_one_interface_are_refused() {
    let text = second_network(
        "[[network.endpoint]]\nid = \"web1b\"\nnetns = \"c1\"\nip = \"10.78.0.11\"\n",
    );
    let e = check(&text).unwrap_err();
    assert_eq!(
        e,
        "endpoint `web1b` of network `back`: netns `c1` already gets an interface `eth0` from endpoint `web1` of network `front`"
    );
    check(&text.replace(
        "ip = \"10.78.0.11\"",
        "ip = \"10.78.0.11\"\nifname = \"eth1\"",
    ))
    .unwrap();
}

#[test]
fn names_and_ranges() {
    let e = check(&ISSUE_EXAMPLE.replace("name = \"front\"", "name = \"fr.ont\"")).unwrap_err();
    assert!(e.starts_with("network: name `fr.ont`"), "{e}");
    let e = check(&ISSUE_EXAMPLE.replace("vni = 4096", "vni = 16777216")).unwrap_err();
    assert_eq!(e, "network `front`: vni 16777216 is outside 1..=16777215");
    let e = check(&second_network("").replace("name = \"back\"", "name = \"front\"")).unwrap_err();
    assert_eq!(e, "network `front` is defined twice");
    let e = check(&ISSUE_EXAMPLE.replace("id = \"web1\"", "id = \"web:1\"")).unwrap_err();
    assert!(
        e.starts_with("endpoint `web:1` of network `front`: name `web:1`"),
        "{e}"
    );
}

const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PUB2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

/// The issue's example made encrypted, with real keys and the remote
/// behind the peer's tunnel address.
fn encrypted() -> String {
    ISSUE_EXAMPLE
        .replace("encrypted = false", "encrypted = true")
        .replacen(
            "private_key = \"<base64>\"",
            &format!("private_key = \"{PRIV}\""),
            1,
        )
        .replacen(
            "public_key = \"<base64>\"",
            &format!("public_key = \"{PUB2}\""),
            1,
        )
        .replace("node_ip = \"198.18.0.2\"", "node_ip = \"100.96.0.2\"")
}

#[test]
fn an_encrypted_network_with_a_sound_mesh_is_valid() {
    check(&encrypted()).unwrap();
}

#[test]
fn encrypted_networks_need_a_sound_mesh() {
    let no_wg = encrypted();
    let start = no_wg.find("[wireguard]").unwrap();
    let end = no_wg.find("[[network]]").unwrap();
    let e = check(&format!("{}{}", &no_wg[..start], &no_wg[end..])).unwrap_err();
    assert_eq!(
        e,
        "network `front`: encrypted = true needs a [wireguard] section"
    );
    let e = check(&ISSUE_EXAMPLE.replace("encrypted = false", "encrypted = true")).unwrap_err();
    assert!(
        e.starts_with("[wireguard]: private_key `<base64>` is not a base64 WireGuard key"),
        "{e}"
    );
    let e = check(&encrypted().replace(PUB2, "abc")).unwrap_err();
    assert!(
        e.starts_with("[[wireguard.peer]] 100.96.0.2: public_key `abc`"),
        "{e}"
    );
    let e = check(&encrypted().replace("tunnel_ip = \"100.96.0.2\"", "tunnel_ip = \"100.97.0.2\""))
        .unwrap_err();
    assert!(
        e.contains("100.97.0.2 is not a host address of this node's mesh 100.96.0.0/24"),
        "{e}"
    );
    let e = check(&encrypted().replace("100.96.0.1/24", "100.96.0.1/32")).unwrap_err();
    assert!(e.contains("at most /30"), "{e}");
}

#[test]
fn an_encrypted_remote_outside_the_mesh_is_refused_not_sent_in_clear() {
    let e = check(&encrypted().replace("node_ip = \"100.96.0.2\"", "node_ip = \"198.18.0.2\""))
        .unwrap_err();
    assert_eq!(
        e,
        "network `front`: encrypted, but remote 10.77.0.12 has node_ip 198.18.0.2, which is no [[wireguard.peer]] tunnel_ip: its traffic would leave in clear"
    );
}
