//! A graceful restart on one node: a second `netd agent` on the same state
//! directory takes the listening sockets over from the running one, which
//! stops accepting, drains and exits 0. Long-lived connections proxied by
//! the old agent (through the VIP and the published port) keep echoing
//! until the client closes them; loops of new connections, DNS queries and
//! API calls running across the handover see no failure; the new agent
//! serves afterwards; the kernel state is unchanged. A plain stop drains
//! too: new connections are refused, open ones carry on until they close
//! or a second signal comes.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_tests::{sock, Proc};
use support::{wait_for, AgentNode};

/// An echo server on port 7000 (one thread per connection).
const ECHO: &str = "\
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7000))
s.listen(128)
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
";

/// `network create front` and `service create echo` published on 8080,
/// TCP-checked.
fn create_echo(a: &support::Agent) {
    a.ok(&["network", "create", "front", "--subnet", "10.77.0.0/24"]);
    a.ok(&[
        "service",
        "create",
        "echo",
        "--network",
        "front",
        "--publish",
        "8080:7000",
        "--health",
        "tcp",
    ]);
}

fn replica(t: &AgentNode, name: &str) -> Proc {
    t.agent.run(
        &t.dir,
        &[
            "--network",
            "front",
            "--service",
            "echo",
            "--name",
            name,
            "--",
            "python3",
            "-c",
            ECHO,
        ],
    )
}

/// Sends `what` and reads it back.
fn echo(s: &mut TcpStream, what: &[u8]) -> std::io::Result<()> {
    s.write_all(what)?;
    let mut back = vec![0u8; what.len()];
    s.read_exact(&mut back)?;
    if back != what {
        return Err(std::io::Error::other("echoed different bytes"));
    }
    Ok(())
}

/// Half-closes and expects the far side to close too: a clean finish.
fn finish(mut s: TcpStream) -> std::io::Result<()> {
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(std::io::Error::other("bytes after the close"));
    }
    Ok(())
}

/// A long-lived proxied connection echoing every 20 ms until stopped,
/// then closed from this side. Yields how many echoes it made.
struct Flow {
    stop: Arc<AtomicBool>,
    echoes: Arc<AtomicU64>,
    thread: JoinHandle<Result<u64, String>>,
}

impl Flow {
    fn open(ns: &str, to: SocketAddr, name: String) -> Flow {
        let mut s = sock::connect(ns, to, None).unwrap();
        echo(&mut s, name.as_bytes()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let echoes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&echoes);
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                echo(&mut s, format!("{name} {n}").as_bytes())
                    .map_err(|e| format!("{name}: echo {n} failed: {e}"))?;
                n += 1;
                counted.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            finish(s).map_err(|e| format!("{name}: closing after {n} echoes: {e}"))?;
            Ok(n)
        });
        Flow {
            stop,
            echoes,
            thread,
        }
    }

    /// Waits until `more` further round trips have gone through the
    /// connection: whoever serves it is alive and serving it now.
    fn wait_echoes(&self, more: u64) {
        let from = self.echoes.load(Ordering::Relaxed);
        wait_for(
            "more echoes on an open flow",
            Duration::from_secs(10),
            || self.echoes.load(Ordering::Relaxed) >= from + more,
        );
    }

    fn close(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("flow thread")
    }
}

/// Work repeated until stopped, from inside a namespace: successes and
/// the failures seen.
struct Churn {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl Churn {
    fn start(
        what: &'static str,
        ns: Option<String>,
        mut once: impl FnMut() -> Result<(), String> + Send + 'static,
    ) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let done = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&done);
        let work = move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stopped.load(Ordering::Relaxed) {
                match once() {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(format!("{what}: {e}")),
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed)
        };
        let thread = match ns {
            Some(ns) => std::thread::spawn(move || sock::in_netns(&ns, work)),
            None => std::thread::spawn(work),
        };
        Churn { stop, done, thread }
    }

    /// Waits until `more` further attempts have been made (each counted
    /// as a success or a failure by `stop`).
    fn wait_attempts(&self, more: u64) {
        let from = self.done.load(Ordering::Relaxed);
        wait_for("more attempts", Duration::from_secs(20), || {
            self.done.load(Ordering::Relaxed) >= from + more
        });
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("churn thread")
    }
}

/// One short proxied connection: connect, echo, close cleanly.
fn one_connection(to: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map_err(|e| format!("connect {to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo(&mut s, b"ping").map_err(|e| format!("echo via {to}: {e}"))?;
    finish(s).map_err(|e| format!("close via {to}: {e}"))
}

fn inode(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[test]
fn a_graceful_restart_drops_no_connection() {
    let mut t = AgentNode::start_with(|_| vec!["--drain-timeout".into(), "60s".into()]);
    let a = &t.agent;
    create_echo(a);
    let _replicas: Vec<Proc> = ["echo.1", "echo.2", "echo.3"]
        .iter()
        .map(|n| replica(&t, n))
        .collect();
    a.wait_healthy("echo", 3);
    let vip = a.vip("echo", "front");
    let _client = a.sleeper(&t.dir, "front", "client");
    let client_ns = t.task_ns("client");
    let gateway: SocketAddr = "10.77.0.1:53".parse().unwrap();
    wait_for("the client task", Duration::from_secs(20), || {
        std::path::Path::new("/run/netns").join(&client_ns).exists()
            && shoal_tests::dns::query_a(&client_ns, gateway, "echo").1 == vec![vip]
    });
    let via_vip = SocketAddr::new(vip.into(), 7000);
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();

    // Long-lived connections proxied by the old agent, both ways in.
    let mut flows = Vec::new();
    for i in 0..3 {
        flows.push(Flow::open(&client_ns, via_vip, format!("vip-{i}")));
        flows.push(Flow::open(&t.node, published, format!("published-{i}")));
    }
    let watched = [
        t.node.clone(),
        format!("shoal.{}.front", t.node),
        client_ns.clone(),
        t.task_ns("echo.1"),
    ];
    let before: Vec<String> = watched
        .iter()
        .map(|n| shoal_tests::snapshot::of(n))
        .collect();
    let ps_before = a.json(&["service", "ps", "echo"]);

    // New connections, DNS queries and API calls, all the way through.
    let churn = vec![
        Churn::start("vip", Some(client_ns.clone()), move || {
            one_connection(via_vip)
        }),
        Churn::start("published", Some(t.node.clone()), move || {
            one_connection(published)
        }),
        Churn::start("dns", None, {
            let ns = client_ns.clone();
            move || {
                std::thread::sleep(Duration::from_millis(10));
                match shoal_tests::dns::query_a(&ns, gateway, "echo") {
                    (0, ips) if ips == vec![vip] => Ok(()),
                    other => Err(format!("answer {other:?}")),
                }
            }
        }),
        Churn::start("api", None, {
            let api = a.api.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let out = std::process::Command::new(support::NETD)
                    .args(["node", "ls"])
                    .env("SHOAL_API", &api)
                    .output()
                    .map_err(|e| e.to_string())?;
                match out.status.success() {
                    true => Ok(()),
                    false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
                }
            }
        }),
    ];
    for c in &churn {
        c.wait_attempts(5);
    }

    // The graceful restart.
    let handover_sock = t.agent.state.join("handover.sock");
    let old_sock = inode(&handover_sock);
    assert!(
        old_sock.is_some(),
        "the running agent listens for a successor"
    );
    let started = Instant::now();
    let second = t.agent.start_second();
    let mut old = std::mem::replace(&mut t.agent, second);
    // The new agent binds its own handover socket just before `taken`.
    let took = wait_for(
        "the new agent to take over",
        Duration::from_secs(30),
        || inode(&handover_sock).is_some_and(|i| Some(i) != old_sock),
    );
    println!(
        "the new agent took over {took:?} after it started ({:?} in all)",
        started.elapsed()
    );
    // The old agent drains: it stays, serving its connections.
    for f in &flows {
        f.wait_echoes(10);
    }
    assert!(!old.exited(), "the old agent left with connections open");
    for f in flows {
        let echoes = f
            .close()
            .unwrap_or_else(|e| panic!("a proxied connection broke: {e}"));
        assert!(echoes > 10, "{echoes} echoes");
    }
    let closed = Instant::now();
    let (code, log) = old.wait_exit(Duration::from_secs(20));
    println!(
        "the old agent exited {:?} after its last connection closed",
        closed.elapsed()
    );
    assert_eq!(code, Some(0), "old agent: {log}");
    assert!(log.contains("drained; exiting"), "old agent: {log}");

    // The new agent alone, for a while.
    for c in &churn {
        c.wait_attempts(5);
    }
    for c in churn {
        let (ok, failed) = c.stop();
        assert!(
            failed.is_empty(),
            "{} failures ({ok} ok): {failed:#?}",
            failed.len()
        );
        assert!(ok > 5, "too little work done: {ok}");
    }
    for to in [via_vip, published] {
        let ns = if to == via_vip { &client_ns } else { &t.node };
        Flow::open(ns, to, format!("after via {to}"))
            .close()
            .unwrap();
    }
    let after: Vec<String> = watched
        .iter()
        .map(|n| shoal_tests::snapshot::of(n))
        .collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            b, a,
            "kernel state of {} changed across the handover",
            watched[i]
        );
    }
    assert_eq!(t.agent.json(&["service", "ps", "echo"]), ps_before);
}

#[test]
fn a_successor_that_leaves_early_changes_nothing() {
    let mut t = AgentNode::start();
    let a = &t.agent;
    create_echo(a);
    let _replica = replica(&t, "echo.1");
    a.wait_healthy("echo", 1);
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    let through = |ns: &str| {
        sock::in_netns(ns, move || {
            (0..20).try_for_each(|_| one_connection(published))
        })
    };
    // Healthy in the store; the balancer follows with the next reconcile.
    wait_for("the published port", Duration::from_secs(10), || {
        through(&t.node).is_ok()
    });
    let flow = Flow::open(&t.node, published, "flow".into());

    // A successor takes the sockets and goes away without `taken`.
    let path = t.agent.state.join("handover.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (gone, sockets) = rt
        .block_on(shoal_netd::handover::take_over(
            &path,
            Duration::from_secs(30),
        ))
        .unwrap()
        .expect("the agent answers");
    // The API, DNS (UDP and TCP), the VIP and the published port.
    assert_eq!(sockets.len(), 5);
    drop((gone, sockets));
    // The old agent serves on, and hands over to the next one.
    through(&t.node).unwrap();
    assert!(!t.agent.exited());
    let second = t.agent.start_second();
    let mut old = std::mem::replace(&mut t.agent, second);
    through(&t.node).unwrap();
    flow.close().unwrap();
    let (code, log) = old.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "old agent: {log}");
    assert!(log.contains("went away before taking over"), "{log}");
    through(&t.node).unwrap();

    // Killed outright, an agent leaves its handover socket behind; the
    // next one finds nobody there and starts normally.
    t.agent.proc.signal(nix::sys::signal::Signal::SIGKILL);
    wait_for("the killed agent", Duration::from_secs(10), || {
        t.agent.exited()
    });
    assert!(path.exists());
    let third = t.agent.start_second();
    drop(std::mem::replace(&mut t.agent, third));
    wait_for(
        "the restarted agent to serve",
        Duration::from_secs(20),
        || through(&t.node).is_ok(),
    );
}

/// An agent started on a state directory whose agent offers no handover
/// (its handover socket is gone, as when two agents start at once and
/// neither has bound one yet) finds the state lock held and exits 1 naming
/// it; the running agent is untouched.
#[test]
fn a_second_agent_without_a_handover_stops_at_the_state_lock() {
    let t = AgentNode::start();
    std::fs::remove_file(t.agent.state.join("handover.sock")).unwrap();
    let mut second = support::Agent {
        proc: Proc::spawn(
            support::NETD,
            &t.agent.args.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
        args: t.agent.args.clone(),
        launcher: Vec::new(),
        api: t.agent.api.clone(),
        state: t.agent.state.clone(),
    };
    let (code, err) = second.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("agent.lock") && err.contains("held by another netd agent"),
        "{err}"
    );
    // The first agent still runs and answers.
    assert!(!t.agent.exited());
    t.agent.ok(&["node", "ls"]);
}

#[test]
fn a_stop_refuses_new_connections_and_drains_open_ones_until_a_second_signal() {
    let mut t = AgentNode::start_with(|_| vec!["--drain-timeout".into(), "60s".into()]);
    create_echo(&t.agent);
    let _replica = replica(&t, "echo.1");
    t.agent.wait_healthy("echo", 1);
    let published: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    wait_for(
        "the published port to serve",
        Duration::from_secs(20),
        || sock::in_netns(&t.node, move || one_connection(published)).is_ok(),
    );
    let first = Flow::open(&t.node, published, "first".into());
    let mut second = sock::connect(&t.node, published, None).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    echo(&mut second, b"second").unwrap();

    t.agent.proc.signal(nix::sys::signal::Signal::SIGTERM);
    wait_for(
        "the published port to refuse connections",
        Duration::from_secs(10),
        || sock::connect(&t.node, published, None).is_err(),
    );
    // Refusing new connections, it still serves the open ones.
    first.wait_echoes(10);
    assert!(!t.agent.exited(), "the agent left with connections open");
    let echoes = first
        .close()
        .unwrap_or_else(|e| panic!("a connection broke while draining: {e}"));
    assert!(echoes > 10, "{echoes} echoes");
    // With one connection closed, the other is still served.
    echo(&mut second, b"still draining").expect("the open connection broke while draining");
    assert!(!t.agent.exited(), "the agent left with a connection open");

    // A second signal closes what is still open, at once.
    t.agent.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, log) = t.agent.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "agent: {log}");
    assert!(log.contains("stopped again while draining"), "agent: {log}");
    // The connection it still had is closed (end of stream or reset).
    let mut rest = [0u8; 16];
    match second.read(&mut rest) {
        Ok(0) => {}
        Err(e)
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut => {}
        other => panic!("the last connection outlived the agent: {other:?}"),
    }
}
