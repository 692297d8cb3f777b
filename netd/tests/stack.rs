//! `netd stack deploy` and `netd stack rm` as a user meets them: a compose
//! file written here, deployed on one node with the embedded store; its
//! objects labelled with the stack, warnings for what netd ignores, a
//! broken file refused at its line and column with nothing made, a
//! re-deploy that changes nothing, and a removal that leaves nothing.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{http_get, wait_for, Agent, AgentNode};

/// A compose file: `web` (two replicas answering with their hostname,
/// published on 8080, least-conn, a health check, and a `volumes` key netd
/// ignores) and `client`, both on network `back` (10.88.0.0/24).
/// `POLICY` is replaced by the policy label's value.
const COMPOSE: &str = r#"version: "3.8"
services:
  web:
    command:
      - python3
      - -c
      - |
        import http.server, socket
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                b = socket.gethostname().encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)
            def log_message(self, *a):
                pass
        http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
    ports: ["8080:8000"]
    networks: [back]
    volumes: ["./data:/data"]
    healthcheck:
      interval: 500ms
      timeout: 400ms
      retries: 2
    deploy:
      replicas: 2
      labels:
        shoal.lb.policy: POLICY
  client:
    command: sleep 300
    networks: [back]
networks:
  back:
    ipam:
      config:
        - subnet: 10.88.0.0/24
"#;

fn write_compose(dir: &Path, name: &str, policy: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, COMPOSE.replace("POLICY", policy)).unwrap();
    path.display().to_string()
}

fn list(a: &Agent, what: &str) -> Vec<Value> {
    a.json(&[what, "ls"]).as_array().unwrap().clone()
}

fn names_of(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_stack_deploys_labelled_warns_refuses_bad_files_redeploys_unchanged_and_goes() {
    let t = AgentNode::start();
    let a = &t.agent;

    // A broken file: exit 2, the file, line and column of the bad value,
    // and nothing made (its valid network included).
    let bad = write_compose(&t.dir, "bad.yml", "fastest");
    let out = a.netd(&["stack", "deploy", "-c", &bad, "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = COMPOSE
        .lines()
        .position(|l| l.contains("shoal.lb.policy"))
        .unwrap()
        + 1;
    let column = COMPOSE
        .lines()
        .nth(line - 1)
        .unwrap()
        .find("POLICY")
        .unwrap()
        + 1;
    let at = format!("{bad}:{line}:{column}:");
    assert!(err.contains(&at), "expected `{at}` in: {err}");
    assert!(err.contains("fastest"), "{err}");
    assert!(list(a, "network").is_empty());
    assert!(list(a, "service").is_empty());

    // Deployed: the network and both services, labelled with the stack.
    let good = write_compose(&t.dir, "demo.yml", "least-conn");
    let out = a.netd(&["stack", "deploy", "-c", &good, "demo"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("services.web.volumes"),
        "no warning naming the ignored key: {stderr}"
    );
    for line in [
        "created network back",
        "created service web",
        "created service client",
    ] {
        assert!(stdout.contains(line), "`{line}` missing from: {stdout}");
    }
    let nets = list(a, "network");
    assert_eq!(names_of(&nets), set(&["back"]));
    assert_eq!(nets[0]["subnet"], "10.88.0.0/24");
    assert_eq!(nets[0]["labels"]["stack"], "demo");
    let svcs = list(a, "service");
    assert_eq!(names_of(&svcs), set(&["client", "web"]));
    assert!(
        svcs.iter().all(|s| s["labels"]["stack"] == "demo"),
        "{svcs:?}"
    );
    let web = a.json(&["service", "inspect", "web"]);
    assert_eq!(web["policy"], "least-conn");
    assert_eq!(web["replicas"], 2);
    assert_eq!(web["health"]["check"], "tcp");
    assert_eq!(web["health"]["interval_ms"], 500);
    assert_eq!(web["ports"][0]["published"], 8080);
    let vip: Ipv4Addr = web["networks"]["back"].as_str().unwrap().parse().unwrap();

    // Running: two healthy web replicas and the client, which resolves
    // `web` to its VIP at its gateway.
    a.wait_healthy("web", 2);
    a.wait_healthy("client", 1);
    let client_ns = t.task_ns("client.1");
    let gateway: SocketAddr = "10.88.0.1:53".parse().unwrap();
    wait_for("client.1 to resolve web", Duration::from_secs(20), || {
        shoal_tests::dns::query_a(&client_ns, gateway, "web").0 == 0
    });
    assert_eq!(
        shoal_tests::dns::query_a(&client_ns, gateway, "web").1,
        vec![vip]
    );
    // Healthy in the store first; the node's DNS follows on its next
    // reconcile.
    wait_for(
        "tasks.web to name both replicas",
        Duration::from_secs(20),
        || {
            shoal_tests::dns::query_a(&client_ns, gateway, "tasks.web")
                .1
                .len()
                == 2
        },
    );
    let answered = |ns: &str, to: SocketAddr| -> BTreeSet<String> {
        (0..10).filter_map(|_| http_get(ns, to, "/").ok()).collect()
    };
    let both = set(&["web.1", "web.2"]);
    wait_for("both replicas to answer", Duration::from_secs(20), || {
        answered(&client_ns, SocketAddr::new(vip.into(), 8000)) == both
    });
    assert_eq!(answered(&t.node, "198.18.0.1:8080".parse().unwrap()), both);

    // The same file again: nothing changes.
    let before = (list(a, "network"), list(a, "service"));
    let report = a.json(&["stack", "deploy", "-c", &good, "demo"]);
    assert_eq!(report["created"], serde_json::json!([]), "{report}");
    assert_eq!(report["updated"], serde_json::json!([]), "{report}");
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!((list(a, "network"), list(a, "service")), before);
    let out = a.ok(&["stack", "deploy", "-c", &good, "demo"]);
    assert!(out.contains("unchanged service web"), "{out}");

    // Removed: services, network, replicas and their namespaces.
    let removal = a.json(&["stack", "rm", "demo"]);
    assert_eq!(
        removal["networks"],
        serde_json::json!(["back"]),
        "{removal}"
    );
    assert!(list(a, "service").is_empty());
    assert!(list(a, "network").is_empty());
    wait_for(
        "the stack's namespaces to go",
        Duration::from_secs(20),
        || t.lab.namespaces().iter().all(|n| !n.starts_with("shoal")),
    );
    let out = a.netd(&["stack", "rm", "demo"]);
    assert_eq!(out.status.code(), Some(1), "a second rm finds nothing");
}

#[test]
fn a_stack_removed_and_deployed_again_serves_again() {
    let t = AgentNode::start();
    let a = &t.agent;
    let good = write_compose(&t.dir, "demo.yml", "round-robin");
    for round in 0..2 {
        a.ok(&["stack", "deploy", "-c", &good, "demo"]);
        a.wait_healthy("web", 2);
        let both = set(&["web.1", "web.2"]);
        wait_for(
            &format!("both replicas to answer (round {round})"),
            Duration::from_secs(20),
            || {
                (0..10)
                    .filter_map(|_| http_get(&t.node, "198.18.0.1:8080".parse().unwrap(), "/").ok())
                    .collect::<BTreeSet<_>>()
                    == both
            },
        );
        a.ok(&["stack", "rm", "demo"]);
    }
}
