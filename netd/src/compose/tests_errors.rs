//! Errors (with their positions) and warnings (with their paths).

use crate::model::Policy;
use crate::model::Probe;

use super::tests::{err, ok, service};

#[test]
fn port_errors_point_at_the_port() {
    let e = err("services:\n  s:\n    ports:\n      - 8080:53/udp\n");
    assert_eq!((e.line, e.column), (Some(4), Some(9)));
    assert_eq!(e.path, "services.s.ports[0]");
    assert!(e.message.contains("UDP"), "{e}");
    let e = err("services:\n  s:\n    ports:\n      - { target: 53, protocol: udp }\n");
    assert_eq!(e.path, "services.s.ports[0].protocol");
    assert_eq!((e.line, e.column), (Some(4), Some(33)));
    for bad in ["127.0.0.1:80:80", "8000-8010:8000-8010", "0", "x", "70000"] {
        let e = err(&format!("services:\n  s:\n    ports: [\"{bad}\"]\n"));
        assert_eq!(
            (e.line, e.path.as_str()),
            (Some(3), "services.s.ports[0]"),
            "{e}"
        );
    }
    let e = err("services:\n  s:\n    ports: [{ published: 80 }]\n");
    assert!(e.message.contains("target"), "{e}");
}

#[test]
fn a_bad_policy_is_an_error_at_its_line_and_column() {
    let text = "services:\n  web:\n    deploy:\n      labels:\n        shoal.lb.policy: fastest\n";
    let e = err(text);
    assert_eq!((e.line, e.column), (Some(5), Some(26)));
    assert_eq!(e.path, r#"services.web.deploy.labels["shoal.lb.policy"]"#);
    for name in Policy::ALL {
        assert!(e.message.contains(name.name()), "{e}");
    }
    let shown = e.to_string();
    assert!(
        shown.starts_with(r#"compose.yml:5:26: services.web.deploy.labels["shoal.lb.policy"]: unknown policy `fastest`"#),
        "{shown}"
    );
    let e = err("services:\n  web:\n    deploy:\n      labels: [shoal.lb.policy=x]\n");
    assert_eq!((e.line, e.column), (Some(4), Some(16)));
    assert_eq!(e.path, "services.web.deploy.labels[0]");
}

#[test]
fn other_bad_values_are_errors_with_positions() {
    let cases = [
        (
            "services:\n  s:\n    deploy: { endpoint_mode: fast }\n",
            3,
            "services.s.deploy.endpoint_mode",
        ),
        (
            "services:\n  s:\n    deploy: { replicas: many }\n",
            3,
            "services.s.deploy.replicas",
        ),
        (
            "services:\n  s:\n    deploy: { labels: { shoal.lb.mode: udp } }\n",
            3,
            r#"services.s.deploy.labels["shoal.lb.mode"]"#,
        ),
        (
            "services:\n  s:\n    deploy: { labels: { shoal.health: ping } }\n",
            3,
            r#"services.s.deploy.labels["shoal.health"]"#,
        ),
        (
            "services:\n  s:\n    healthcheck: { interval: 10 }\n",
            3,
            "services.s.healthcheck.interval",
        ),
        (
            "services:\n  s:\n    networks: [nowhere]\n",
            3,
            "services.s.networks[0]",
        ),
        (
            "services:\n  s:\n    command: \"echo 'open\"\n",
            3,
            "services.s.command",
        ),
        ("services:\n  s:\n    ports: 80\n", 3, "services.s.ports"),
        ("services:\n  bad/name: {}\n", 2, "services[\"bad/name\"]"),
        (
            "networks:\n  n: { ipam: { config: [{ subnet: 10.0.0.1/24 }] } }\n",
            2,
            "networks.n.ipam.config[0].subnet",
        ),
        (
            "networks:\n  n: { ipam: { config: [{ subnet: \"fd00::/64\" }] } }\n",
            2,
            "networks.n.ipam.config[0].subnet",
        ),
        ("services: [a, b]\n", 1, "services"),
        ("services:\n  s: {}\n  s: {}\n", 3, ""),
    ];
    for (text, line, path) in cases {
        let e = err(text);
        assert_eq!((e.line, e.path.as_str()), (Some(line), path), "{text}: {e}");
        assert!(e.column.is_some());
    }
}

#[test]
fn syntax_errors_have_positions() {
    let e = err("services:\n  web:\n    ports: [80\n");
    assert!(e.line.is_some() && e.column.is_some(), "{e}");
    assert!(e.path.is_empty());
    let e = err("services: {}\n---\nservices: {}\n");
    assert_eq!(e.line, Some(2), "{e}");
    for empty in ["", "# nothing\n", "~\n"] {
        assert!(err(empty).message.contains("empty"));
    }
    assert!(err("- a\n").message.contains("expected a mapping"));
}

#[test]
fn unknown_keys_are_warnings_naming_their_path() {
    let stack = ok(r#"
version: "3"
x-common: &common { restart: always }
volumes: { data: {} }
services:
  web:
    image: nginx
    command: nginx
    environment: [A=1]
    volumes: ["data:/data"]
    labels: [a=b]
    x-note: fine
    deploy:
      mode: global
      resources: { limits: { cpus: "1" } }
      restart_policy: { condition: on-failure }
      update_config: { parallelism: 1 }
      placement: { constraints: [node.role==manager] }
      labels: { shoal.lb.polcy: p2c }
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost"]
      start_period: 5s
    networks:
      default: { aliases: [w] }
networks:
  default:
    driver: bridge
    external: true
    internal: true
"#);
    let want = [
        "volumes: not supported by netd; ignored",
        "services.web.image: image is not pulled; netd runs `command` on the host filesystem",
        "services.web.environment: not supported by netd; ignored",
        "services.web.volumes: not supported by netd; ignored",
        "services.web.labels: container labels",
        "services.web.deploy.mode: `global` is not supported",
        "services.web.deploy.resources: not supported by netd; ignored",
        "services.web.deploy.restart_policy: not supported by netd; ignored",
        "services.web.deploy.update_config: not supported by netd; ignored",
        "services.web.deploy.placement: not supported by netd; ignored",
        r#"services.web.deploy.labels["shoal.lb.polcy"]: unknown shoal label"#,
        "services.web.healthcheck.start_period: not supported by netd; ignored",
        "services.web.healthcheck.test: cannot run inside a container here; netd checks replicas with `tcp`",
        "services.web.networks.default.aliases: not supported by netd; ignored",
        "networks.default.driver: driver `bridge` is not supported",
        "networks.default.external: external networks are not supported",
        "networks.default.internal: not supported by netd; ignored",
    ];
    for w in want {
        assert!(
            stack.warnings.iter().any(|got| got.starts_with(w)),
            "missing {w:?} in {:#?}",
            stack.warnings
        );
    }
    assert_eq!(stack.warnings.len(), want.len(), "{:#?}", stack.warnings);
    let web = service(&stack, "web");
    assert_eq!(web.health.check, Probe::Tcp);
    assert_eq!(web.labels["shoal.lb.polcy"], "p2c");
}

#[test]
fn tags_interpolation_and_display_without_a_position() {
    let e = err("services:\n  s: !reset {}\n");
    assert_eq!((e.line, e.path.as_str()), (Some(2), "services.s"));
    assert!(e.message.contains("tag `!reset`"), "{e}");
    let stack = ok("services:\n  s: { command: \"echo ${HOME}\" }\n");
    assert!(
        stack.warnings[0].contains("interpolation"),
        "{:?}",
        stack.warnings
    );
    assert_eq!(service(&stack, "s").command, ["echo", "${HOME}"]);
    let e = err("");
    assert_eq!((e.line, e.column), (None, None));
    assert!(
        e.to_string().starts_with("compose.yml: the file is empty"),
        "{e}"
    );
}
