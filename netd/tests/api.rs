//! The agent's API as a user (or a script) meets it: a unix socket only
//! root can open, TCP only with a token, JSON errors naming the field at
//! fault, Prometheus metrics, and `--format json` output that parses.

mod support;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{http_exchange, wait_for, AgentNode, HttpAnswer, NETD};

/// A free TCP port on loopback (free when asked; the agent binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn over_tcp(port: u16, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    http_exchange(s, "GET", path, headers, "").unwrap()
}

/// Asserts `a` is a JSON error with status `status`; returns the JSON.
fn json_error(a: &HttpAnswer, status: u16) -> serde_json::Value {
    assert_eq!(a.status, status, "{} {}", a.head, a.body);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json"),
        "{}",
        a.head
    );
    let v = a.json();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    v
}

#[test]
fn the_unix_api_is_root_only_and_answers_errors_and_metrics_in_json() {
    let t = AgentNode::start();
    let a = &t.agent;
    let mode = std::fs::metadata(a.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Errors are JSON naming the field at fault.
    let bad = a.http(
        "POST",
        "/v1/networks",
        r#"{"name":"front","subnet":"10.77.0.0/33"}"#,
    );
    let e = json_error(&bad, 400);
    assert_eq!(e["field"], "subnet", "{e}");
    let bad = a.http(
        "POST",
        "/v1/networks",
        r#"{"name":"front","subnet":"10.77.0.1/24"}"#,
    );
    let e = json_error(&bad, 400);
    assert_eq!(e["field"], "subnet", "{e}");
    assert!(e["error"].as_str().unwrap().contains("10.77.0.0/24"), "{e}");
    let e = json_error(
        &a.http("POST", "/v1/networks", r#"{"name":"x","colour":1}"#),
        400,
    );
    assert!(e["error"].as_str().unwrap().contains("colour"), "{e}");
    json_error(&a.http("POST", "/v1/networks", "{not json"), 400);
    json_error(&a.http("GET", "/v1/networks/ghost", ""), 404);
    json_error(&a.http("GET", "/v1/nowhere", ""), 404);
    let wrong = a.http("PUT", "/v1/networks", "");
    let e = json_error(&wrong, 405);
    assert!(e["error"].as_str().unwrap().contains("PUT"), "{e}");
    // None of that made anything.
    assert!(a.http("GET", "/v1/networks", "").json() == serde_json::json!([]));

    let created = a.http(
        "POST",
        "/v1/networks",
        r#"{"name":"front","subnet":"10.77.0.0/24"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let e = json_error(
        &a.http(
            "POST",
            "/v1/networks",
            r#"{"name":"back","subnet":"10.77.0.0/16"}"#,
        ),
        409,
    );
    assert_eq!(e["field"], "subnet", "{e}");

    // Metrics: the reconcile counters, and the balancer's once a service
    // with a port exists.
    let m = a.http("GET", "/metrics", "");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("netd_reconciles_total{result=\"ok\"}"),
        "{}",
        m.body
    );
    a.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--publish",
        "8080:8000",
    ]);
    wait_for("the balancer's metrics", Duration::from_secs(20), || {
        let m = a.http("GET", "/metrics", "").body;
        m.contains("shoal_lb_listener_accepted_total{listener=\"vip/web/front/8000\"}")
            && m.contains("shoal_lb_listener_accepted_total{listener=\"publish/web/8080\"}")
    });

    // --format json output parses, and says what exists.
    let nets = a.json(&["network", "ls"]);
    assert_eq!(nets[0]["name"], "front", "{nets}");
    let svcs = a.json(&["service", "ls"]);
    assert_eq!(svcs[0]["name"], "web", "{svcs}");
    let nodes = a.json(&["node", "ls"]);
    assert_eq!(nodes[0]["name"], t.node.as_str(), "{nodes}");
    assert_eq!(nodes[0]["advertise"], "198.18.0.1", "{nodes}");
    let gone = a.json(&["service", "rm", "web"]);
    assert_eq!(gone, serde_json::json!(["web"]));
    let gone = a.json(&["network", "rm", "front"]);
    assert_eq!(gone, serde_json::json!(["front"]));
}

#[test]
fn the_tcp_api_needs_the_token() {
    let port = free_port();
    let t = AgentNode::start_with(|dir| {
        let token = dir.join("token");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
        vec![
            "--api-tcp".into(),
            format!("127.0.0.1:{port}"),
            "--token-file".into(),
            token.display().to_string(),
        ]
    });
    let token_file = t.dir.join("token");
    let api = format!("http://127.0.0.1:{port}");
    wait_for("the TCP API", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // Without the token, or with another: 401, as JSON.
    let no = over_tcp(port, "/v1/nodes", &[]);
    json_error(&no, 401);
    assert!(no.header("www-authenticate").is_some(), "{}", no.head);
    let wrong = over_tcp(
        port,
        "/v1/nodes",
        &[("Authorization", "Bearer 0123456789abcdef0123456789abcdeX")],
    );
    json_error(&wrong, 401);
    json_error(&over_tcp(port, "/metrics", &[]), 401);
    let right = over_tcp(
        port,
        "/v1/nodes",
        &[("Authorization", "Bearer 0123456789abcdef0123456789abcdef")],
    );
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(right.json()[0]["name"], t.node.as_str());

    // The client: refused without --token-file, served with it.
    let client = |args: &[&str]| {
        std::process::Command::new(NETD)
            .args(["--api", &api])
            .args(args)
            .env_remove("SHOAL_API")
            .env_remove("SHOAL_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let out = client(&["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tf = token_file.display().to_string();
    let out = client(&["--token-file", &tf, "node", "ls", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes[0]["name"], t.node.as_str());
    let out = client(&["--token-file", &tf, "network", "create", "front"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_agent_refuses_a_tcp_api_without_a_proper_token() {
    let dir = std::env::temp_dir().join(format!("netd-api-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let short = dir.join("short");
    std::fs::write(&short, "tooshort").unwrap();
    let agent = |extra: &[&str]| {
        let api = format!("unix://{}", dir.join("netd.sock").display());
        let state = dir.join("state").display().to_string();
        let mut cmd = std::process::Command::new(NETD);
        cmd.args(["--api", &api, "agent", "--node-name", "n1"])
            .args(["--advertise", "198.18.0.1", "--state-dir", &state])
            .args(["--api-tcp", "127.0.0.1:1"])
            .args(extra)
            .env_remove("SHOAL_TOKEN_FILE");
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // It must refuse at once; never leave it running.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status.code(), err);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the agent started with {extra:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (code, err) = agent(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--token-file"), "{err}");
    let (code, err) = agent(&["--token-file", &short.display().to_string()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("16"), "{err}");
    let missing = dir.join("missing").display().to_string();
    let (code, err) = agent(&["--token-file", &missing]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        !dir.join("state").exists(),
        "the refused agent made its state"
    );
}
