//! `netd agent`: opens the store (retrying while etcd is away), takes back
//! the tasks an earlier agent left running, starts the agent loop, the
//! scheduler and the API, and runs until SIGTERM or SIGINT. Then the
//! control plane stops, the balancers' listeners close and the DNS servers
//! stop, and the connections the balancers have open get up to
//! `--drain-timeout` to finish (a second signal closes them at once). The
//! kernel's data plane (namespaces, links, routes) and the tasks'
//! processes stay; the node's entries stay until its lease ends, so a
//! restart within the TTL changes nothing anywhere.
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
//!
//! # Layout
//! - `mod.rs` (here): the flags, their checks, the two runtimes and the
//!   signals; [`main`].
//! - `run`: the control plane's life: the store, the agent, the tasks, the
//!   scheduler and the API started, then run until a stop or a successor.
//! - `api`: the API's listening sockets, claimed from a predecessor or
//!   bound anew, and served.
//! - `hand_over`: the old agent's end once its control plane has stopped:
//!   sockets sent, the successor awaited, connections drained.
//! - `lock`: the state directory's lock, held while the control plane runs.

mod api;
mod hand_over;
mod lock;
mod run;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::sync::watch;

use super::Cli;
use crate::api::client::ApiAddr;
use crate::handover;
use crate::model::valid_name;
use crate::node::DataPlane;
use crate::store::etcd::parse_url;
use run::{run, Ended};

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
    /// When stopped (SIGTERM, SIGINT) or after handing its sockets to a
    /// new agent, how long this one keeps proxying the connections it has
    /// open before it exits.
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
    if a.node_name == crate::alloc::VIP_OWNER {
        eprintln!(
            "netd agent: --node-name `{}` is reserved (the owner of service VIPs in the store)",
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
    // Before any thread starts: the kernel moves only a single-threaded
    // process to another mount namespace.
    let joined = match shoal_overlay::host_mounts::join_host_mounts() {
        Ok(joined) => joined,
        Err(e) => {
            eprintln!(
                "netd agent: {e}; start it with `nsenter --net=/run/netns/NODE netd agent ...` instead"
            );
            return 1;
        }
    };
    init_logs(a.log_format);
    if joined {
        tracing::info!("started in a copy of the host's mount namespace (as `ip netns exec` makes); joined the host's, so the namespaces it mounts are seen by every process");
    }
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
    let Signals { stop, again } = data.block_on(async { signals() });
    let path = a.state_dir.join(handover::SOCKET);
    let predecessor = match data.block_on(handover::take_over(&path, TAKE_OVER_LIMIT)) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot take over from the agent running on this state directory; not starting a second one");
            return 1;
        }
    };
    // The old agent lets go of the lock before it sends its sockets, so a
    // successor gets it at once; the wait only covers a slow file system.
    let wait = if predecessor.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    };
    let state_lock = match lock::acquire(&a.state_dir, wait) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
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
        Ended::Signalled(data_plane) => {
            control.shutdown_timeout(CONTROL_PLANE_GRACE);
            drop(state_lock);
            data.block_on(drain(data_plane, a.drain_timeout, again))
        }
        Ended::HandOver(h) => {
            // Whatever of the control plane still runs (task watchers,
            // health checks, blocking work) ends here, before the successor
            // opens the store.
            control.shutdown_timeout(CONTROL_PLANE_GRACE);
            drop(state_lock);
            tracing::info!("control plane stopped; the data plane serves on");
            data.block_on(h.finish(stop, a.drain_timeout))
        }
    }
}

/// A plain stop, once the control plane has stopped: the listeners close
/// and the DNS servers stop at once, and
/// the connections the balancers have open get up to `limit` to finish,
/// unless a second signal (`again`) asks to close them now. Returns the
/// exit code.
async fn drain(data_plane: DataPlane, limit: Duration, mut again: watch::Receiver<bool>) -> i32 {
    tracing::info!(?limit, "stopped accepting; draining open connections");
    tokio::select! {
        drained = data_plane.stop(limit) => {
            if drained {
                tracing::info!("drained; exiting");
            } else {
                tracing::warn!(?limit, "drain timeout; closing the connections still open");
            }
        }
        _ = again.wait_for(|s| *s) => {
            tracing::info!("stopped again while draining; closing open connections");
        }
    }
    0
}

/// The flags [`signals`] turns true.
struct Signals {
    /// The first SIGTERM or SIGINT.
    stop: watch::Receiver<bool>,
    /// A second one: stop draining.
    again: watch::Receiver<bool>,
}

/// Watches SIGTERM and SIGINT. Call inside the runtime that lives longest.
fn signals() -> Signals {
    let (tx, stop) = watch::channel(false);
    let (tx_again, again) = watch::channel(false);
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
        for flag in [tx, tx_again] {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let _ = flag.send(true);
        }
    });
    Signals { stop, again }
}
