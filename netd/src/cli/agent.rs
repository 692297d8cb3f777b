//! `netd agent`: opens the store (retrying while etcd is away), takes back
//! the tasks an earlier agent left running, starts the agent loop, the
//! scheduler and the API, and runs until SIGTERM or SIGINT. On exit the
//! data plane (namespaces, links, routes) and the tasks' processes stay;
//! the node's entries stay until its lease ends, so a restart within the
//! TTL changes nothing anywhere.
//!
//! # Graceful restart
//!
//! An agent started while another runs on the same `--state-dir` takes
//! over from it ([`crate::handover`]): it receives the listening sockets
//! (balancer, DNS, API), serves on them, and once it has reconciled tells
//! the old agent, which stops accepting, drains its proxied connections
//! (up to `--drain-timeout`) and exits 0. No connection is refused, none
//! is cut.
//!
//! For that the process runs two runtimes: the control plane (store,
//! loops, scheduler, tasks, API) and the data plane (DNS servers,
//! listeners, proxied connections). When a successor asks, the control
//! plane stops first: the API stops accepting (new API connections wait in
//! the socket's queue, and the socket goes to the successor with the
//! others), requests in hand finish, the loops stop and the control
//! plane's runtime is shut down, so nothing of the old agent writes to the
//! store, the task records or the kernel any more. Only then are the
//! sockets sent and does the successor open the store. The data plane
//! serves throughout.
//!
//! The API's socket file and `handover.sock` are removed on exit only
//! while they are still this agent's: a successor binds its own
//! `handover.sock` at the same path, and an agent started without a
//! handover binds a new API socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::sync::watch;

use super::Cli;
use crate::agent::Agent;
use crate::api::client::ApiAddr;
use crate::api::server::{router, serve_tcp, ApiState};
use crate::handover::{self, Inherited, Key, Listening, Predecessor, SocketFile, Successor};
use crate::model::{valid_name, Node};
use crate::node::{DataPlane, Plane};
use crate::scheduler::Scheduler;
use crate::store::etcd::{parse_url, EtcdStore};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::tasks::{containers_of, Tasks};
use crate::translate::Local;

/// How long a new agent waits for the running one to hand over.
pub const TAKE_OVER_LIMIT: Duration = Duration::from_secs(30);
/// How long API requests in hand may take when handing over.
pub const API_GRACE: Duration = Duration::from_secs(5);
/// How long the control plane's blocking work may take to stop.
pub const CONTROL_PLANE_GRACE: Duration = Duration::from_secs(10);

/// `netd agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name (unique in the cluster).
    #[arg(long)]
    pub node_name: String,
    /// This node's underlay address (VXLAN endpoint, published ports).
    #[arg(long)]
    pub advertise: Ipv4Addr,
    /// The cluster store: `embedded` (this node alone, kept under
    /// --state-dir) or etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// Where the agent keeps its files (embedded store, tasks, logs).
    #[arg(long, default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,
    /// The namespace that plays this node's host (default: netd's own).
    #[arg(long)]
    pub netns: Option<String>,
    /// How long the node's entries outlive a silent agent.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Also serve the API on this TCP address (needs --token-file).
    #[arg(long)]
    pub api_tcp: Option<SocketAddr>,
    /// After handing its sockets to a new agent, how long this one keeps
    /// proxying the connections it has open before it exits.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Runs the agent; returns the exit code.
pub fn main(cli: &Cli, a: &AgentArgs) -> i32 {
    if !valid_name(&a.node_name) || a.node_name.contains('.') {
        eprintln!(
            "netd agent: --node-name `{}`: 1-63 of A-Z a-z 0-9 _ -, no dots",
            a.node_name
        );
        return 2;
    }
    if a.lease_ttl < Duration::from_secs(1) {
        eprintln!("netd agent: --lease-ttl must be at least 1s");
        return 2;
    }
    let token = match (&a.api_tcp, &cli.token_file) {
        (None, _) => None,
        (Some(_), None) => {
            eprintln!(
                "netd agent: --api-tcp needs --token-file (the TCP API always requires a token)"
            );
            return 2;
        }
        (Some(_), Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) if t.trim().len() >= 16 => Some(t.trim().to_string()),
            Ok(_) => {
                eprintln!(
                    "netd agent: --token-file {}: the token must be at least 16 characters",
                    f.display()
                );
                return 2;
            }
            Err(e) => {
                eprintln!("netd agent: --token-file {}: {e}", f.display());
                return 2;
            }
        },
    };
    let ApiAddr::Unix(socket) = cli.api.clone() else {
        eprintln!("netd agent: --api must be a unix:// socket (use --api-tcp for TCP)");
        return 2;
    };
    if a.store != "embedded" {
        if let Err(e) = parse_url(&a.store) {
            eprintln!("netd agent: --store: {e}");
            return 2;
        }
    }
    init_logs(a.log_format);
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
    };
    let (control, data) = match (runtime("netd-control"), runtime("netd-data")) {
        (Ok(c), Ok(d)) => (c, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("netd agent: cannot start a runtime: {e}");
            return 1;
        }
    };
    // Signals are watched on the data plane's runtime: it lives to the end.
    let stop = data.block_on(async { signals() });
    let path = a.state_dir.join(handover::SOCKET);
    let predecessor = match data.block_on(handover::take_over(&path, TAKE_OVER_LIMIT)) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot take over from the agent running on this state directory; not starting a second one");
            return 1;
        }
    };
    let ended = control.block_on(run(
        a,
        socket,
        token,
        data.handle().clone(),
        predecessor,
        stop.clone(),
    ));
    match ended {
        Ended::Stopped(code) => code,
        Ended::HandOver(h) => {
            // Whatever of the control plane still runs (task watchers,
            // health checks, blocking work) ends here, before the successor
            // opens the store.
            control.shutdown_timeout(CONTROL_PLANE_GRACE);
            tracing::info!("control plane stopped; the data plane serves on");
            data.block_on(h.finish(stop, a.drain_timeout))
        }
    }
}

/// SIGTERM and SIGINT turn the returned flag true. Call inside the runtime
/// that lives longest.
fn signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot watch SIGTERM and SIGINT");
            // Keep the sender: a dropped one would read as a stop.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

/// The store; for the embedded one also a weak handle, to check that it
/// is gone (saved) before a successor opens it.
type Opened = (Arc<dyn Store>, Option<Weak<MemoryStore>>);

async fn open_store(a: &AgentArgs, stop: &mut watch::Receiver<bool>) -> Option<Opened> {
    if a.store == "embedded" {
        return match MemoryStore::open(&a.state_dir.join("store")) {
            Ok(s) => {
                let weak = Arc::downgrade(&s);
                Some((s, Some(weak)))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the embedded store");
                None
            }
        };
    }
    let endpoints = parse_url(&a.store).ok()?;
    let mut backoff = Duration::from_millis(200);
    loop {
        match EtcdStore::connect(&endpoints, "/shoal/", Duration::from_secs(2)).await {
            Ok(s) => {
                tracing::info!(store = %a.store, "connected to etcd");
                return Some((Arc::new(s), None));
            }
            Err(e) => {
                tracing::warn!(store = %a.store, error = %e, retry_in = ?backoff, "etcd unreachable; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How [`run`] ended.
enum Ended {
    /// Stopped (a signal, or a failure): the exit code.
    Stopped(i32),
    /// A new agent asked to take over; the control plane has stopped.
    HandOver(Box<HandOver>),
}

/// What the old agent still holds once its control plane stopped.
struct HandOver {
    successor: Successor,
    listening: Listening,
    data_plane: DataPlane,
    /// Duplicates of the API's listening sockets.
    api: Vec<(Key, OwnedFd)>,
    memory: Option<Weak<MemoryStore>>,
}

impl HandOver {
    /// Sends the sockets, serves until the successor has taken over (or
    /// serves on and waits for another if it goes away first), then
    /// drains. Returns the exit code.
    async fn finish(self, mut stop: watch::Receiver<bool>, drain: Duration) -> i32 {
        let HandOver {
            mut successor,
            mut listening,
            data_plane,
            api,
            memory,
        } = self;
        if let Some(store) = memory.and_then(|w| w.upgrade()) {
            // Nothing changes it any more; make sure the file is final.
            tracing::warn!("the embedded store outlived the control plane; saving it now");
            if let Err(e) = store.flush() {
                tracing::error!(error = %e, "could not save the store");
            }
        }
        loop {
            let pid = successor.pid();
            let mut sockets = data_plane.listening_sockets();
            for (key, fd) in &api {
                match fd.try_clone() {
                    Ok(fd) => sockets.push((key.clone(), fd)),
                    Err(e) => tracing::warn!(socket = %key, error = %e, "cannot duplicate"),
                }
            }
            let handed = async {
                successor.hand_over(&sockets).await?;
                tracing::info!(
                    pid,
                    sockets = sockets.len(),
                    "sockets sent; serving until the new agent has taken over"
                );
                successor.taken().await
            };
            let outcome = tokio::select! {
                r = handed => r,
                _ = stop.wait_for(|s| *s) => return 0,
            };
            drop(sockets);
            match outcome {
                Ok(true) => {
                    tracing::info!(pid, ?drain, "the new agent has taken over; draining");
                    break;
                }
                Ok(false) => tracing::warn!(
                    pid,
                    "the new agent went away before taking over; still serving"
                ),
                Err(e) => tracing::warn!(pid, error = %e, "the handover failed; still serving"),
            }
            let next = tokio::select! {
                s = listening.next() => s,
                _ = stop.wait_for(|s| *s) => return 0,
            };
            let Some(next) = next else {
                tracing::error!("the handover socket stopped; serving until stopped");
                let _ = stop.wait_for(|s| *s).await;
                return 0;
            };
            successor = next;
        }
        // Later agents find the new one; this one's copies close.
        drop((listening, api));
        let drained = tokio::select! {
            d = data_plane.stop(drain) => d,
            _ = stop.wait_for(|s| *s) => {
                tracing::info!("stopped while draining; closing open connections");
                return 0;
            }
        };
        if drained {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!(?drain, "drain timeout; closing the connections still open");
        }
        0
    }
}

/// Once this agent has reconciled, listens for its own successor and
/// tells the agent it took over from (if any) that it serves now. The new
/// `handover.sock` is bound first, so the path always leads to a live
/// agent: one that finds nobody answering takes the file for stale.
async fn release_then_listen(
    predecessor: Option<Predecessor>,
    mut reconciled: watch::Receiver<i64>,
    path: PathBuf,
    data: tokio::runtime::Handle,
) -> Option<Listening> {
    // Until this agent has reconciled once, the old one serves alone.
    if predecessor.is_some() && reconciled.changed().await.is_err() {
        // The agent stopped before it ever reconciled.
        return std::future::pending().await;
    }
    let listening = match handover::listen(&path, &data) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot listen for a successor; this agent cannot hand over");
            None
        }
    };
    if let Some(p) = predecessor {
        let pid = p.pid();
        match p.taken().await {
            Ok(()) => tracing::info!(
                pid,
                "took over from the previous agent; it drains and exits"
            ),
            Err(e) => {
                tracing::warn!(pid, error = %e, "could not tell the previous agent that this one serves")
            }
        }
    }
    listening
}

/// The next successor, once listening.
async fn next_successor(listening: &mut Option<Listening>) -> Successor {
    match listening {
        Some(l) => match l.next().await {
            Some(s) => s,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn run(
    a: &AgentArgs,
    socket: PathBuf,
    token: Option<String>,
    data: tokio::runtime::Handle,
    predecessor: Option<(Predecessor, Inherited)>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let (predecessor, inherited) = match predecessor {
        Some((p, i)) => (Some(p), Arc::new(i)),
        None => (None, Arc::new(Inherited::default())),
    };
    // The control plane's own stop: a signal, or a successor.
    let (halt, halted) = watch::channel(false);
    let Some((store, memory)) = open_store(a, &mut stop.clone()).await else {
        return Ended::Stopped(1);
    };
    let recorded = Tasks::load(&a.state_dir);
    let local = Local {
        node: a.node_name.clone(),
        netns: a.netns.clone(),
        underlay: a.advertise,
        containers: containers_of(&recorded),
    };
    let node = Node {
        name: a.node_name.clone(),
        advertise: a.advertise,
        lb_addresses: Default::default(),
    };
    let api_sockets = match ApiSockets::claim(a, &socket, &inherited) {
        Ok(s) => s,
        Err(code) => return Ended::Stopped(code),
    };
    let plane = Plane {
        runtime: Some(data.clone()),
        inherited: Arc::clone(&inherited),
    };
    let agent = Agent::start_with(Arc::clone(&store), node, local, a.lease_ttl, plane);
    let data_plane = agent.data_plane.clone();
    let tasks = Tasks::new(
        Arc::clone(&store),
        Arc::clone(&agent.owned),
        Arc::clone(&agent.containers),
        agent.reconciled.clone(),
        &a.state_dir,
    );
    {
        let tasks = tasks.clone();
        tokio::spawn(async move { tasks.restore(recorded).await });
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("netd"));
    let scheduler = Scheduler::new(
        Arc::clone(&store),
        Arc::clone(&agent.owned),
        tasks.clone(),
        exe,
        a.state_dir.join("logs"),
    );
    tokio::spawn(scheduler.run(agent.applied.clone(), halted.clone()));

    let metrics = {
        let lb = Arc::clone(&agent.lb);
        let stats = Arc::clone(&agent.stats);
        let applied = agent.reconciled.clone();
        let tasks = tasks.clone();
        Arc::new(move || {
            let mut out = stats.render(*applied.borrow());
            out.push_str(&format!(
                "# HELP netd_tasks Tasks on this node.\n# TYPE netd_tasks gauge\nnetd_tasks {}\n",
                tasks.list().len()
            ));
            if let Some(rt) = lb.get() {
                out.push_str(&shoal_lb::metrics::render(&rt.listeners()));
            }
            out
        })
    };
    let state = ApiState {
        store: Arc::clone(&store),
        tasks,
        node: a.node_name.clone(),
        metrics,
        applied: agent.reconciled.clone(),
    };
    let app = router(state);
    let api = match api_sockets.serve(app, token, &halted) {
        Ok(api) => api,
        Err(e) => {
            tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
            agent.stop().await;
            return Ended::Stopped(1);
        }
    };
    let Api {
        file: api_file,
        lent,
        mut servers,
    } = api;
    tracing::info!(node = %a.node_name, api = %socket.display(), store = %a.store, "agent running");

    let mut listening: Option<Listening> = None;
    let ready = release_then_listen(
        predecessor,
        agent.reconciled.clone(),
        a.state_dir.join(handover::SOCKET),
        data,
    );
    tokio::pin!(ready);
    let mut ready_done = false;
    let mut code = 0;
    let successor = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                tracing::info!("stopping; the data plane and the tasks stay");
                break None;
            }
            l = &mut ready, if !ready_done => {
                ready_done = true;
                listening = l;
            }
            s = next_successor(&mut listening) => break Some(s),
            Some(r) = servers.join_next() => {
                let e = match r {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
                code = 1;
                break None;
            }
        }
    };
    // The API stops accepting (new connections wait in the queue) and the
    // scheduler stops; requests in hand may finish.
    let _ = halt.send(true);
    let finished = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(API_GRACE, finished).await.is_err() {
        tracing::warn!(grace = ?API_GRACE, "API requests still open; closing them");
        servers.abort_all();
    }
    agent.stop().await;
    match (successor, listening) {
        (Some(successor), Some(listening)) => Ended::HandOver(Box::new(HandOver {
            successor,
            listening,
            data_plane,
            api: lent,
            memory,
        })),
        (_, listening) => {
            api_file.remove_if_ours();
            if let Some(l) = &listening {
                l.file().remove_if_ours();
            }
            Ended::Stopped(code)
        }
    }
}

/// The API's listening sockets, taken from a predecessor or bound anew.
/// Claimed before the agent starts: its first reconcile closes every
/// handed-over socket still unclaimed.
struct ApiSockets {
    unix: std::os::unix::net::UnixListener,
    file: SocketFile,
    tcp: Option<std::net::TcpListener>,
    /// Duplicates to lend to a successor.
    lent: Vec<(Key, OwnedFd)>,
}

/// The API's servers and what a successor needs of their sockets.
struct Api {
    file: SocketFile,
    lent: Vec<(Key, OwnedFd)>,
    servers: tokio::task::JoinSet<std::io::Result<()>>,
}

impl ApiSockets {
    /// The unix socket at `socket` and, with `--api-tcp`, the TCP one; an
    /// exit code if one cannot be had.
    fn claim(a: &AgentArgs, socket: &Path, inherited: &Inherited) -> Result<ApiSockets, i32> {
        let fail = |e: std::io::Error| {
            tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
            1
        };
        let (unix, file) = match inherited.unix_listener(socket) {
            Some(l) => (l, SocketFile::at(socket)),
            None => handover::bind_unix(socket).map_err(fail)?,
        };
        let path = socket.to_path_buf();
        let mut lent = vec![(
            Key::Unix { path },
            unix.as_fd().try_clone_to_owned().map_err(fail)?,
        )];
        let tcp = match a.api_tcp {
            Some(addr) => {
                let (l, dup) = api_tcp(addr, inherited).map_err(|e| {
                    tracing::error!(%addr, error = %e, "cannot listen for the TCP API");
                    1
                })?;
                lent.push(dup);
                Some(l)
            }
            None => None,
        };
        Ok(ApiSockets {
            unix,
            file,
            tcp,
            lent,
        })
    }

    /// Serves the API on them until `halted` (TCP with `token`).
    fn serve(
        self,
        app: axum::Router,
        token: Option<String>,
        halted: &watch::Receiver<bool>,
    ) -> std::io::Result<Api> {
        let shutdown = || {
            let mut halted = halted.clone();
            async move {
                let _ = halted.wait_for(|h| *h).await;
            }
        };
        let mut servers = tokio::task::JoinSet::new();
        let unix = tokio::net::UnixListener::from_std(self.unix)?;
        {
            let (app, shutdown) = (app.clone(), shutdown());
            servers.spawn(async move {
                axum::serve(unix, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            });
        }
        if let (Some(tcp), Some(token)) = (self.tcp, token) {
            let tcp = tokio::net::TcpListener::from_std(tcp)?;
            tracing::info!(addr = ?tcp.local_addr().ok(), "API on TCP (token required)");
            let shutdown = shutdown();
            servers.spawn(async move { serve_tcp(tcp, app, token, shutdown).await });
        }
        Ok(Api {
            file: self.file,
            lent: self.lent,
            servers,
        })
    }
}

/// The TCP API's listener (handed over or new) and a duplicate to lend.
fn api_tcp(
    addr: SocketAddr,
    inherited: &Inherited,
) -> std::io::Result<(std::net::TcpListener, (Key, OwnedFd))> {
    let netns = handover::process_netns()?;
    let l = match inherited.tcp_listener(netns, addr) {
        Some(l) => l,
        None => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            l
        }
    };
    let key = Key::Tcp {
        netns,
        addr: l.local_addr()?,
    };
    let dup = l.as_fd().try_clone_to_owned()?;
    Ok((l, (key, dup)))
}
