//! The built `shoal-dns` binary: config checking, exit codes, serving, and
//! SIGHUP reloads under load without a dropped query.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-dns");

/// The issue's example, exactly as written there.
const ISSUE_EXAMPLE: &str = r#"domain = "shoal"
ttl = 5
upstreams = ["127.0.0.1:5399"]

[[network]]
name = "front"
listen = ["127.0.0.1:5353"]

[[network.service]]
name = "web"
vip = "10.77.0.200"
endpoint_mode = "vip"            # or "dnsrr"
ports = [{ name = "http", port = 80, protocol = "tcp" }]
tasks = [
  { name = "web.1", ip = "10.77.0.11", healthy = true },
  { name = "web.2", ip = "10.77.0.12", healthy = true },
  { name = "web.3", ip = "10.77.0.13", healthy = false },
]
"#;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "shoal-dns-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        // Write then rename, so a reload never reads half a file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `shoal-dns`, stopped (TERM, then KILL) on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("--threads")
            .arg("2")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next stdout line, within [`STEP`].
    fn line(&self) -> String {
        self.lines
            .recv_timeout(STEP)
            .expect("a line from shoal-dns")
    }

    /// Reads `listening NET ADDR` lines up to `ready`.
    fn addrs(&self) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        loop {
            let line = self.line();
            if line == "ready" {
                return out;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "unexpected line {line:?}");
            assert_eq!(parts[0], "listening");
            out.push((parts[1].to_string(), parts[2].parse().unwrap()));
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, and the exit code within [`STEP`].
    fn stop(mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + STEP;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn check(text: &str) -> (Option<i32>, String, String) {
    let scratch = Scratch::new("check");
    let path = scratch.write("test.toml", text);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_issue_example_is_accepted_as_written() {
    let (code, stdout, stderr) = check(ISSUE_EXAMPLE);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn bad_configs_exit_2_with_one_line_naming_the_field_and_line() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            ISSUE_EXAMPLE.replace("10.77.0.200", "10.77.0.300"),
            ":11:",
            "vip",
        ),
        (
            ISSUE_EXAMPLE.replace("ttl = 5", "ttl = \"five\""),
            ":2:",
            "ttl",
        ),
        (
            ISSUE_EXAMPLE.replace("endpoint_mode = \"vip\"  ", "colour = \"red\"  "),
            ":12:",
            "colour",
        ),
        (
            ISSUE_EXAMPLE.replace("vip = \"10.77.0.200\"\n", ""),
            ":9:",
            "network[0].service[0].vip",
        ),
        (
            ISSUE_EXAMPLE.replace("name = \"web.2\"", "name = \"web.1\""),
            ":9:",
            "network[0].service[0].tasks[1].name",
        ),
        (
            ISSUE_EXAMPLE.replace("endpoint_mode = \"vip\"", "endpoint_mode = \"rr\""),
            ":12:",
            "endpoint_mode",
        ),
        (
            ISSUE_EXAMPLE.replace("\"127.0.0.1:5399\"", "\"nowhere:53\""),
            ":3:",
            "upstreams",
        ),
        (
            ISSUE_EXAMPLE.replace("domain = \"shoal\"", "domain = \"sh oal\""),
            ":1:",
            "domain",
        ),
    ];
    for (text, line, field) in cases {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, Some(2), "{field}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(&format!("test.toml{line}")),
            "{field}: line {line}: {stderr}"
        );
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/shoal-dns.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shoal-dns.toml"));
}

fn web_ip(bytes: &[u8]) -> Option<String> {
    let m = Message::from_vec(bytes).ok()?;
    ips(&m).first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_without_dropping_a_query() {
    let scratch = Scratch::new("reload");
    let path = scratch.write("dns.toml", RECORDS);
    let running = Running::start(&path);
    let addrs = running.addrs();
    let front = addrs.iter().find(|(n, _)| n == "front").unwrap().1;
    assert_eq!(addrs.len(), 3);

    // Load: four clients, each query must be answered within a second.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, answered, dropped, seen) = (
            stop.clone(),
            answered.clone(),
            dropped.clone(),
            seen.clone(),
        );
        clients.push(tokio::spawn(async move {
            let query = query_message("web.shoal.", RecordType::A, None);
            while !stop.load(Ordering::Relaxed) {
                match udp_raw(front, &query.to_vec().unwrap(), Duration::from_secs(1)).await {
                    Some(bytes) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if let Some(ip) = web_ip(&bytes) {
                            let mut seen = seen.lock().unwrap();
                            if seen.last() != Some(&ip) {
                                seen.push(ip);
                            }
                        }
                    }
                    None => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    let next_line = |running: &Running| running.line();
    pause().await;

    // A good reload: the VIP moves.
    scratch.write("dns.toml", &RECORDS.replace("10.77.0.200", "10.77.0.201"));
    running.signal(Signal::SIGHUP);
    assert_eq!(
        tokio::task::block_in_place(|| next_line(&running)),
        "reloaded"
    );
    assert_eq!(
        ips(&udp(front, "web.shoal.", RecordType::A).await),
        ["10.77.0.201"]
    );
    pause().await;

    // A bad reload: logged, and the records stay.
    scratch.write("dns.toml", &RECORDS.replace("10.77.0.200", "10.77.0.999"));
    running.signal(Signal::SIGHUP);
    assert_eq!(
        tokio::task::block_in_place(|| next_line(&running)),
        "reload-failed"
    );
    pause().await;

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        within(c).await.unwrap();
    }
    assert_eq!(
        ips(&udp(front, "web.shoal.", RecordType::A).await),
        ["10.77.0.201"]
    );
    let (answered, dropped) = (
        answered.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
    );
    assert_eq!(
        dropped,
        0,
        "{dropped} of {} queries dropped",
        answered + dropped
    );
    assert!(answered > 100, "too little load: {answered}");
    // In-flight answers may interleave around the swap; the first and the
    // last are what matter, and the bad file was never served.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("10.77.0.200"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("10.77.0.201"),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .all(|ip| ip == "10.77.0.200" || ip == "10.77.0.201"));
    assert_eq!(running.stop(), Some(0), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_listeners() {
    let scratch = Scratch::new("listeners");
    let path = scratch.write("dns.toml", RECORDS);
    let running = Running::start(&path);
    let addrs = running.addrs();
    let ops = addrs.iter().find(|(n, _)| n == "ops").unwrap().1;
    let front = addrs.iter().find(|(n, _)| n == "front").unwrap().1;

    // Drop network ops, add network extra.
    let start = RECORDS.find("[[network]]\nname = \"ops\"").unwrap();
    let changed = format!(
        "{}[[network]]\nname = \"extra\"\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[network.service]]\nname = \"x\"\nvip = \"10.55.0.1\"\n",
        &RECORDS[..start]
    );
    scratch.write("dns.toml", &changed);
    running.signal(Signal::SIGHUP);
    let mut lines = Vec::new();
    loop {
        let line = tokio::task::block_in_place(|| running.line());
        if line == "reloaded" {
            break;
        }
        lines.push(line);
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "stopped ops 127.0.0.1:0");
    let extra: SocketAddr = lines[1]
        .strip_prefix("listening extra ")
        .unwrap()
        .parse()
        .unwrap();

    assert_eq!(
        ips(&udp(extra, "x.shoal.", RecordType::A).await),
        ["10.55.0.1"]
    );
    assert_eq!(
        ips(&udp(front, "web.shoal.", RecordType::A).await),
        ["10.77.0.200"]
    );
    let query = query_message("mon.shoal.", RecordType::A, None)
        .to_vec()
        .unwrap();
    assert!(udp_raw(ops, &query, Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(running.stop(), Some(0));
}
