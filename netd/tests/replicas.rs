//! Replicas netd runs itself, as a user meets them: `service create
//! --replicas N -- COMMAND` on one node with the embedded store; scaling up
//! and down under load (the drain lets no request fail), a killed replica
//! restarted under its name with backoff, its output in the agent's log
//! directory, and `service rm` taking every replica and namespace away.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{http_get, wait_for, Agent, AgentNode};

/// An HTTP server on port 8000 answering every GET with its hostname (the
/// task's name), after the delay in seconds its first argument gives (none:
/// at once), saying so on stdout once it listens.
const SERVER: &str = r#"
import http.server, socket, sys, time
name = socket.gethostname()
delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(delay)
        b = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("", 8000), H)
print("serving as", name, flush=True)
s.serve_forever()
"#;

/// `network create front` and `service create web --network front
/// --publish 8080:8000 --replicas N [EXTRA…] -- python3 -c SERVER`.
fn create_web(a: &Agent, replicas: u32, extra: &[&str]) {
    create_web_answering_after(a, replicas, extra, None);
}

/// [`create_web`] with replicas that answer after `delay` seconds.
fn create_web_answering_after(a: &Agent, replicas: u32, extra: &[&str], delay: Option<&str>) {
    a.ok(&["network", "create", "front", "--subnet", "10.77.0.0/24"]);
    let n = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--publish",
        "8080:8000",
        "--replicas",
        &n,
    ];
    args.extend(extra);
    args.extend(["--", "python3", "-c", SERVER]);
    args.extend(delay);
    a.ok(&args);
}

/// The task names `service ps web` shows.
fn task_names(a: &Agent) -> Vec<String> {
    let ps = a.json(&["service", "ps", "web"]);
    ps.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The processes inside namespace `ns` (none if it does not exist).
fn pids_in(ns: &str) -> Vec<u32> {
    let out = shoal_tests::cmd::output("ip", &["netns", "pids", ns]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Who answers GETs to `to` from `ns` over `tries` requests.
fn answering(ns: &str, to: SocketAddr, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .filter_map(|_| http_get(ns, to, "/").ok())
        .collect()
}

/// GETs in a loop, one connection each, through every target, until
/// stopped; every request that fails or is answered by something other
/// than a replica is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<LoadResult>>,
    /// Replicas that answered, with when.
    answers: Arc<Mutex<Vec<(Instant, String)>>>,
}

struct LoadResult {
    ok: usize,
    failures: Vec<String>,
}

impl Load {
    /// Starts it; `targets` are (namespace to send from, address).
    fn start(targets: Vec<(String, SocketAddr)>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, seen) = (Arc::clone(&stop), Arc::clone(&answers));
        let thread = std::thread::spawn(move || {
            let mut r = LoadResult {
                ok: 0,
                failures: Vec::new(),
            };
            // Bounded even if never stopped.
            let end = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                for (ns, to) in &targets {
                    match http_get(ns, *to, "/") {
                        Ok(body) if body.starts_with("web.") => {
                            r.ok += 1;
                            seen.lock().unwrap().push((Instant::now(), body));
                        }
                        Ok(body) => r.failures.push(format!("{to}: answered {body:?}")),
                        Err(e) => r.failures.push(format!("{to}: {e}")),
                    }
                }
            }
            r
        });
        Load {
            stop,
            thread: Some(thread),
            answers,
        }
    }

    fn requests(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Replicas that answered at or after `since`.
    fn answered_since(&self, since: Instant) -> BTreeSet<String> {
        let a = self.answers.lock().unwrap();
        a.iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn finish(mut self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn replicas_scale_up_and_down_under_load_without_a_failed_request() {
    let t = AgentNode::start();
    let a = &t.agent;
    create_web(a, 3, &[]);
    let tasks = a.wait_healthy("web", 3);
    assert_eq!(task_names(a), names(&["web.1", "web.2", "web.3"]));
    assert!(tasks.iter().all(|task| task["node"] == t.node.as_str()));
    let svc = a.json(&["service", "inspect", "web"]);
    let vip: Ipv4Addr = svc["networks"]["front"].as_str().unwrap().parse().unwrap();
    assert_eq!(svc["replicas"], 3);

    // A client container on the network resolves the service to its VIP.
    let _client = a.run(
        &t.dir,
        &[
            "--network",
            "front",
            "--name",
            "client",
            "--",
            "sleep",
            "300",
        ],
    );
    let client_ns = t.task_ns("client");
    let gateway: SocketAddr = "10.77.0.1:53".parse().unwrap();
    // (Its namespace is whole once the agent lists the task.)
    wait_for("the client to resolve web", Duration::from_secs(20), || {
        task_pid(a, "client").is_some()
            && shoal_tests::dns::query_a(&client_ns, gateway, "web").0 == 0
    });
    assert_eq!(
        shoal_tests::dns::query_a(&client_ns, gateway, "web").1,
        vec![vip]
    );

    // Each replica answers as itself, through the VIP and the published port.
    let via_vip = SocketAddr::new(vip.into(), 8000);
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    let three: BTreeSet<String> = names(&["web.1", "web.2", "web.3"]).into_iter().collect();
    wait_for("every replica to answer", Duration::from_secs(20), || {
        answering(&client_ns, via_vip, 12) == three
    });
    assert_eq!(answering(&t.node, published, 12), three);

    // Up to five.
    let out = a.ok(&["service", "scale", "web=5"]);
    assert!(out.contains("web scaled to 5"), "{out}");
    a.wait_healthy("web", 5);
    assert_eq!(
        task_names(a),
        names(&["web.1", "web.2", "web.3", "web.4", "web.5"])
    );
    let five: BTreeSet<String> = names(&["web.1", "web.2", "web.3", "web.4", "web.5"])
        .into_iter()
        .collect();
    wait_for("five replicas to answer", Duration::from_secs(20), || {
        answering(&client_ns, via_vip, 20) == five
    });

    // Down to two, with requests flowing through the VIP and the published
    // port all along: the three leaving are drained before they stop.
    let load = Load::start(vec![
        (client_ns.clone(), via_vip),
        (t.node.clone(), published),
    ]);
    wait_for("the load to run", Duration::from_secs(10), || {
        load.requests() >= 20
    });
    let scaled_at = Instant::now();
    a.ok(&["service", "scale", "web=2"]);
    let gone = ["web.3", "web.4", "web.5"].map(|n| t.task_ns(n));
    let took = wait_for("the scale down", Duration::from_secs(30), || {
        task_names(a) == names(&["web.1", "web.2"]) && gone.iter().all(|ns| !netns_exists(ns))
    });
    println!("scaled 5 -> 2 in {took:?}");
    let settled = Instant::now();
    wait_for(
        "more requests after the scale down",
        Duration::from_secs(10),
        || load.answered_since(settled).len() == 2 && load.requests() >= 200,
    );
    let during = load.answered_since(scaled_at);
    let after = load.answered_since(settled);
    let r = load.finish();
    println!("{} requests during the scale down", r.ok);
    assert!(
        r.failures.is_empty(),
        "{} of {} requests failed during the scale down: {:?}",
        r.failures.len(),
        r.ok + r.failures.len(),
        &r.failures[..r.failures.len().min(10)]
    );
    assert!(r.ok >= 200, "too few requests to mean anything: {}", r.ok);
    assert!(during.len() >= 2, "{during:?}");
    assert_eq!(after, names(&["web.1", "web.2"]).into_iter().collect());
    assert!(pids_in(&t.task_ns("web.1")).len() == 1);

    // Removed: every replica stops and its namespace goes.
    a.ok(&["service", "rm", "web"]);
    wait_for("the replicas to go", Duration::from_secs(30), || {
        ["web.1", "web.2"]
            .iter()
            .all(|n| !netns_exists(&t.task_ns(n)))
    });
    let out = a.netd(&["service", "ps", "web"]);
    assert_eq!(out.status.code(), Some(1), "the service is gone");
    let left = t
        .lab
        .namespaces()
        .into_iter()
        .filter(|n| n.starts_with("shoal-t.") && n.contains(".web."))
        .collect::<Vec<_>>();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        !answering(&t.node, published, 1).contains("web.1"),
        "the published port still answers"
    );
}

/// The process of this node's task `name` (`GET /v1/tasks`), once it has one.
fn task_pid(a: &Agent, name: &str) -> Option<u64> {
    let tasks = a.http("GET", "/v1/tasks", "").json();
    tasks.as_array()?.iter().find(|t| t["name"] == name)?["pid"].as_u64()
}

/// Waits until web.2 has logged its start `n` times, kills its process,
/// and returns how long until the agent runs a new one.
fn kill_and_time_restart(a: &Agent, log: impl Fn(&str) -> String, n: usize) -> Duration {
    wait_for("web.2 to listen", Duration::from_secs(20), || {
        log("web.2").matches("serving as web.2").count() >= n
    });
    let old = task_pid(a, "web.2").expect("web.2 runs");
    let killed = Instant::now();
    shoal_tests::cmd::run("kill", &["-9", &old.to_string()]);
    wait_for("web.2 to be restarted", Duration::from_secs(40), || {
        task_pid(a, "web.2").is_some_and(|p| p != old)
    });
    killed.elapsed()
}

#[test]
fn a_killed_replica_is_restarted_under_its_name_with_backoff_and_logged() {
    let t = AgentNode::start();
    let a = &t.agent;
    // A TCP check, so a restarted replica takes traffic once it listens.
    create_web(a, 2, &["--health", "tcp", "--health-interval", "200ms"]);
    a.wait_healthy("web", 2);

    // Each replica's output goes to <state-dir>/logs/<task>.log.
    let log = |task: &str| {
        std::fs::read_to_string(a.state.join("logs").join(format!("{task}.log")))
            .unwrap_or_default()
    };
    assert!(
        log("web.1").contains("serving as web.1"),
        "{}",
        log("web.1")
    );
    assert!(
        log("web.2").contains("serving as web.2"),
        "{}",
        log("web.2")
    );

    // Killed: back under the same name, in a namespace of that name.
    let ns2 = t.task_ns("web.2");
    let first = kill_and_time_restart(a, log, 1);
    // Killed again soon after each start, twice: each restart waits longer
    // (a replica that exits soon after its start backs off, doubling from
    // 500 ms).
    let second = kill_and_time_restart(a, log, 2);
    let third = kill_and_time_restart(a, log, 3);
    println!("restarts after {first:?}, {second:?}, {third:?}");
    assert!(second >= Duration::from_millis(500), "{second:?}");
    assert!(third >= Duration::from_secs(1), "{third:?}");

    // Serving again, as itself.
    let tasks = a.wait_healthy("web", 2);
    assert_eq!(task_names(a), names(&["web.1", "web.2"]));
    assert!(tasks.iter().any(|t| t["name"] == "web.2"));
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    let both: BTreeSet<String> = names(&["web.1", "web.2"]).into_iter().collect();
    wait_for("web.2 to answer again", Duration::from_secs(20), || {
        answering(&t.node, published, 8) == both
    });
    let local = a.http("GET", "/v1/tasks", "").json();
    let web2 = local
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "web.2")
        .unwrap()
        .clone();
    assert_eq!(web2["slot"], 2, "{web2}");
    assert_eq!(web2["netns"], ns2.as_str(), "{web2}");
    let pid = web2["pid"].as_u64().unwrap() as u32;
    assert_eq!(pids_in(&ns2), vec![pid], "only the new replica runs there");

    // Every start appended to the same log.
    wait_for(
        "the log to show every start",
        Duration::from_secs(20),
        || log("web.2").matches("serving as web.2").count() == 4,
    );
    assert_eq!(log("web.1").matches("serving as web.1").count(), 1);
}

#[test]
fn a_changed_command_replaces_the_replicas_one_by_one_without_a_failed_request() {
    let t = AgentNode::start();
    let a = &t.agent;
    create_web(a, 2, &["--health", "tcp", "--health-interval", "200ms"]);
    a.wait_healthy("web", 2);
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    let v1: BTreeSet<String> = names(&["web.1", "web.2"]).into_iter().collect();
    wait_for("both replicas to answer", Duration::from_secs(20), || {
        answering(&t.node, published, 8) == v1
    });

    let load = Load::start(vec![(t.node.clone(), published)]);
    wait_for("the load to run", Duration::from_secs(10), || {
        load.requests() >= 20
    });
    let v2_server = SERVER.replace("name.encode()", "(name + \" v2\").encode()");
    a.ok(&[
        "service", "update", "web", "--", "python3", "-c", &v2_server,
    ]);
    let changed = Instant::now();
    let v2: BTreeSet<String> = names(&["web.1 v2", "web.2 v2"]).into_iter().collect();
    let took = wait_for(
        "both replicas to run the new command",
        Duration::from_secs(60),
        || {
            let since = Instant::now();
            std::thread::sleep(Duration::from_millis(300));
            load.answered_since(since) == v2
        },
    );
    println!("replaced both replicas in {took:?}");
    let during = load.answered_since(changed);
    let r = load.finish();
    assert!(
        r.failures.is_empty(),
        "{} of {} requests failed while the replicas were replaced: {:?}",
        r.failures.len(),
        r.ok + r.failures.len(),
        &r.failures[..r.failures.len().min(10)]
    );
    // One at a time: the old and the new answered side by side.
    assert!(
        during.contains("web.1 v2") && during.contains("web.2"),
        "{during:?}"
    );
    assert_eq!(task_names(a), names(&["web.1", "web.2"]));
    for name in ["web.1", "web.2"] {
        let ns = t.task_ns(name);
        assert_eq!(pids_in(&ns).len(), 1, "one process in {ns}");
    }
}

#[test]
fn a_request_in_flight_to_a_draining_replica_is_answered_before_it_stops() {
    let t = AgentNode::start();
    let a = &t.agent;
    // Each answer takes 1.5 s.
    create_web_answering_after(a, 1, &[], Some("1.5"));
    a.wait_healthy("web", 1);
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    // Healthy in the store first, then in the balancer: wait until it answers.
    wait_for("the replica to answer", Duration::from_secs(20), || {
        http_get(&t.node, published, "/").is_ok_and(|b| b == "web.1")
    });
    let node = t.node.clone();
    // A request that is still being answered when the replica is told to go.
    let in_flight = std::thread::spawn(move || http_get(&node, published, "/"));
    std::thread::sleep(Duration::from_millis(400));
    let scaled_at = Instant::now();
    a.ok(&["service", "scale", "web=0"]);
    let answer = in_flight.join().unwrap();
    assert_eq!(
        answer.as_deref().ok(),
        Some("web.1"),
        "the request in flight was cut: {answer:?}"
    );
    wait_for("the replica to stop", Duration::from_secs(20), || {
        task_names(a).is_empty()
    });
    println!(
        "drained and stopped {:?} after the scale",
        scaled_at.elapsed()
    );
}
