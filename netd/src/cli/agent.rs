//! `netd agent`: opens the store (retrying while etcd is away), takes back
//! the tasks an earlier agent left running, starts the agent loop, the
//! scheduler and the API, and runs until SIGTERM or SIGINT. On exit the
//! data plane (namespaces, links, routes) and the tasks' processes stay;
//! the node's entries stay until its lease ends, so a restart within the
//! TTL changes nothing anywhere.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::sync::watch;

use super::Cli;
use crate::agent::Agent;
use crate::api::client::ApiAddr;
use crate::api::server::{router, serve_tcp, serve_unix, ApiState};
use crate::model::{valid_name, Node};
use crate::scheduler::Scheduler;
use crate::store::etcd::{parse_url, EtcdStore};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::tasks::{containers_of, Tasks};
use crate::translate::Local;

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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netd agent: cannot start a runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(a, socket, token))
}

async fn open_store(a: &AgentArgs, stop: &mut watch::Receiver<bool>) -> Option<Arc<dyn Store>> {
    if a.store == "embedded" {
        return match MemoryStore::open(&a.state_dir.join("store")) {
            Ok(s) => Some(s),
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
                return Some(Arc::new(s));
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

async fn run(a: &AgentArgs, socket: PathBuf, token: Option<String>) -> i32 {
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping; the data plane and the tasks stay");
        let _ = stop_tx.send(true);
    });
    let Some(store) = open_store(a, &mut stop).await else {
        return 1;
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
    let agent = Agent::start(Arc::clone(&store), node, local, a.lease_ttl);
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
    tokio::spawn(scheduler.run(agent.applied.clone(), stop.clone()));

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
    if let (Some(addr), Some(token)) = (a.api_tcp, token) {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                let app = app.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    if let Err(e) = serve_tcp(l, app, token, shutdown).await {
                        tracing::error!(error = %e, "the TCP API stopped");
                    }
                });
                tracing::info!(%addr, "API on TCP (token required)");
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for the TCP API");
                return 1;
            }
        }
    }
    tracing::info!(node = %a.node_name, api = %socket.display(), store = %a.store, "agent running");
    let shutdown = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let code = match serve_unix(&socket, app, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
            1
        }
    };
    let _ = std::fs::remove_file(&socket);
    agent.stop().await;
    code
}
