use std::collections::BTreeMap;

use crate::model::Policy;
use crate::model::Probe;

use super::*;
use crate::model::{ClientAddress, EndpointMode, HealthCheck, PortMode};

pub(super) fn ok(text: &str) -> Stack {
    match parse("compose.yml", text) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

pub(super) fn err(text: &str) -> ComposeError {
    match parse("compose.yml", text) {
        Ok(s) => panic!("parsed: {s:?}"),
        Err(e) => e,
    }
}

pub(super) fn service<'s>(stack: &'s Stack, name: &str) -> &'s Service {
    stack.services.iter().find(|s| s.name == name).unwrap()
}

pub(super) const FULL: &str = r#"
version: "3.8"
services:
  web:
    command: ["python3", "-m", "http.server", "8000"]
    ports: ["8080:8000"]
    networks: [front]
    healthcheck: { interval: 2s, timeout: 500ms, retries: 3 }
    deploy:
      replicas: 3
      labels:
        shoal.lb.policy: least-conn
        shoal.lb.mode: http
        shoal.lb.client-address: forwarded
        shoal.health: http:/healthz
        team: web
  cache:
    entrypoint: redis-server
    command: --port 6379
    networks:
      front:
      back:
    deploy: { endpoint_mode: dnsrr }
networks:
  front:
    driver: overlay
    driver_opts: { encrypted: "true", com.docker.network.driver.mtu: 1400 }
    ipam: { config: [{ subnet: 10.77.0.0/24, gateway: 10.77.0.254 }] }
    labels: ["tier=front"]
  back:
"#;

#[test]
fn a_full_file_with_two_services_and_networks() {
    let stack = ok(FULL);
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    let names: Vec<_> = stack.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["front", "back"],
        "no default network: nobody uses it"
    );
    let front = &stack.networks[0];
    assert_eq!(front.subnet, Some("10.77.0.0/24".parse().unwrap()));
    assert_eq!(front.gateway, Some("10.77.0.254".parse().unwrap()));
    assert!(front.encrypted && front.mtu == Some(1400));
    assert_eq!(
        front.labels,
        BTreeMap::from([("tier".into(), "front".into())])
    );
    assert!(!stack.networks[1].encrypted && stack.networks[1].subnet.is_none());

    let web = service(&stack, "web");
    assert_eq!(web.command, ["python3", "-m", "http.server", "8000"]);
    assert_eq!(web.replicas, 3);
    assert_eq!(web.networks, BTreeMap::from([("front".into(), None)]));
    assert_eq!(web.policy, Policy::LeastConn);
    assert_eq!(web.client_address, ClientAddress::Forwarded);
    let p = &web.ports[0];
    assert_eq!(
        (p.published, p.target, p.mode),
        (Some(8080), 8000, PortMode::Http)
    );
    let h = &web.health;
    assert_eq!(
        h.check,
        Probe::Http {
            path: "/healthz".into()
        }
    );
    assert_eq!((h.interval_ms, h.timeout_ms, h.fall), (2000, 500, 3));
    assert_eq!(web.labels, BTreeMap::from([("team".into(), "web".into())]));

    let cache = service(&stack, "cache");
    assert_eq!(cache.command, ["redis-server", "--port", "6379"]);
    assert_eq!(cache.replicas, 1, "a command means one replica by default");
    assert_eq!(cache.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(cache.networks.len(), 2);
    assert_eq!(cache.health.check, Probe::None);
    assert_eq!(cache.policy, Policy::RoundRobin);
}

#[test]
fn short_and_long_ports() {
    let stack = ok(r#"
services:
  s:
    ports:
      - "8080:8000"
      - 9000
      - "7070:7000/tcp"
      - "6060:6000/http"
      - { target: 5000, published: 5050, protocol: tcp, mode: ingress, name: api }
      - { target: 4000, published: "4040", app_protocol: http }
      - target: 3000
        mode: host
"#);
    let got: Vec<_> = service(&stack, "s")
        .ports
        .iter()
        .map(|p| (p.published, p.target, p.mode, p.name.as_deref()))
        .collect();
    use PortMode::*;
    assert_eq!(
        got,
        [
            (Some(8080), 8000, Tcp, None),
            (None, 9000, Tcp, None),
            (Some(7070), 7000, Tcp, None),
            (Some(6060), 6000, Http, None),
            (Some(5050), 5000, Tcp, Some("api")),
            (Some(4040), 4000, Http, None),
            (None, 3000, Tcp, None),
        ]
    );
    assert_eq!(stack.warnings.len(), 1, "{:?}", stack.warnings);
    assert!(stack.warnings[0].starts_with("services.s.ports[6].mode: host mode"));
}

#[test]
fn the_mode_label_makes_unwritten_ports_http() {
    let stack = ok(r#"
services:
  s:
    ports: ["80", "81/tcp", { target: 82, app_protocol: tcp }]
    deploy: { labels: ["shoal.lb.mode=http"] }
"#);
    let modes: Vec<_> = service(&stack, "s").ports.iter().map(|p| p.mode).collect();
    assert_eq!(modes, [PortMode::Http, PortMode::Http, PortMode::Tcp]);
}

#[test]
fn labels_in_both_forms() {
    let as_list = ok(r#"
services:
  s:
    deploy:
      labels: ["a=1", "b=x=y", "c", "shoal.lb.policy=maglev"]
"#);
    let as_map = ok(r#"
services:
  s:
    deploy:
      labels: { a: 1, b: "x=y", c: , shoal.lb.policy: maglev }
"#);
    for stack in [as_list, as_map] {
        let s = service(&stack, "s");
        let want = [("a", "1"), ("b", "x=y"), ("c", "")];
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(s.labels, want);
        assert_eq!(s.policy, Policy::Maglev);
    }
    let e = err("services:\n  s:\n    deploy:\n      labels: [\"a=1\", \"a=2\"]\n");
    assert!(e.message.contains("twice"), "{e}");
}

#[test]
fn a_service_without_networks_is_on_default_which_the_stack_creates() {
    let stack = ok("services:\n  a: { command: [sleep, '60'] }\n  b:\n    networks: [default]\n");
    assert_eq!(stack.networks.len(), 1);
    let net = &stack.networks[0];
    assert_eq!(
        (net.name.as_str(), net.subnet, net.vni),
        ("default", None, None)
    );
    for s in &stack.services {
        assert_eq!(s.networks, BTreeMap::from([("default".into(), None)]));
    }
    assert_eq!(
        (stack.services[0].replicas, stack.services[1].replicas),
        (1, 0)
    );
    // A declared default is used as declared, once.
    let stack = ok("services:\n  a: {}\nnetworks:\n  default: { ipam: { config: [{ subnet: 10.9.0.0/16 }] } }\n");
    assert_eq!(stack.networks.len(), 1);
    assert_eq!(
        stack.networks[0].subnet,
        Some("10.9.0.0/16".parse().unwrap())
    );
}

#[test]
fn string_commands_are_split_like_a_shell() {
    let stack = ok(r#"
services:
  a:
    command: sh -c 'echo "hello world" && sleep 1' --flag="two words" a\ b
  b:
    entrypoint: ["/bin/sh", "-c"]
    command: "exec  server --port 80"
  c:
    command: [echo, 1, true]
"#);
    assert_eq!(
        service(&stack, "a").command,
        [
            "sh",
            "-c",
            r#"echo "hello world" && sleep 1"#,
            "--flag=two words",
            "a b"
        ]
    );
    assert_eq!(
        service(&stack, "b").command,
        ["/bin/sh", "-c", "exec", "server", "--port", "80"]
    );
    assert_eq!(service(&stack, "c").command, ["echo", "1", "true"]);
}

#[test]
fn health_blocks() {
    let stack = ok(r#"
services:
  off: { healthcheck: { disable: true }, deploy: { labels: { shoal.health: tcp } } }
  none: { healthcheck: { test: ["NONE"] } }
  timed: { healthcheck: { interval: 1m30s, timeout: 1.5s, retries: 5 } }
  label_only: { deploy: { labels: [shoal.health=http:/up] } }
"#);
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    assert_eq!(service(&stack, "off").health.check, Probe::None);
    assert_eq!(service(&stack, "none").health.check, Probe::None);
    let t = &service(&stack, "timed").health;
    assert_eq!(
        (t.check.clone(), t.interval_ms, t.timeout_ms, t.fall),
        (Probe::Tcp, 90_000, 1500, 5)
    );
    let l = &service(&stack, "label_only").health;
    assert_eq!(l.check, Probe::Http { path: "/up".into() });
    assert_eq!(l.interval_ms, HealthCheck::default().interval_ms);
}

#[test]
fn merge_keys_and_anchors() {
    let stack = ok(r#"
x-base: &base
  command: [serve]
  deploy: { replicas: 2, labels: { shoal.lb.policy: p2c } }
services:
  a:
    <<: *base
    deploy: { replicas: 5 }
  b: *base
"#);
    let a = service(&stack, "a");
    assert_eq!(
        (a.replicas, a.policy, a.command.len()),
        (5, Policy::RoundRobin, 1)
    );
    let b = service(&stack, "b");
    assert_eq!((b.replicas, b.policy), (2, Policy::P2c));
}

#[test]
fn the_module_doc_example_parses() {
    let doc: String = include_str!("mod.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```yaml")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    let stack = ok(&doc);
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    assert_eq!(stack.services.len(), 2);
    assert_eq!(service(&stack, "web").policy, Policy::LeastConn);
    assert!(stack.networks[0].encrypted);
}
