//! `shoal-dns --config FILE`: serves the records of a TOML file, reloading
//! it on SIGHUP (a bad file is logged and the old records stay).
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad config file (one line
//! on stderr naming the file, line and field), 1 for anything else (e.g. a
//! listen address that cannot be bound).
//!
//! On stdout, one line per event, for scripts and tests:
//! `listening NETWORK ADDR` once per bound address, then `ready`; after
//! each SIGHUP `stopped NETWORK ADDR` / `listening NETWORK ADDR` for
//! listeners removed or added, then `reloaded`, or `reload-failed`. Logs go
//! to stderr (`RUST_LOG` filters them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shoal_dns::{server, Config, Dns, DnsServer, Snapshot};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// Serve shoal service DNS from a TOML file.
#[derive(Parser, Debug)]
#[command(name = "shoal-dns", version)]
struct Args {
    /// The config file (see dns/README.md for every key).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the config file and exit (0 if good, 2 if not).
    #[arg(long)]
    check: bool,
    /// Worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,hickory_server=warn,hickory_proto=warn")
            }),
        )
        .init();
    let args = Args::parse();
    let (config, snapshot) = match Config::load_with_snapshot(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("shoal-dns: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("ok");
        return ExitCode::SUCCESS;
    }
    // One thread: tokio's single-threaded scheduler, which does the same
    // with less bookkeeping per wake-up than a pool of one worker.
    let mut runtime = match args.threads {
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut pool = tokio::runtime::Builder::new_multi_thread();
            pool.worker_threads(n);
            pool
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let result = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(run(&args.config, config, snapshot)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-dns: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The servers running, by (network, configured address).
type Listeners = BTreeMap<(String, SocketAddr), DnsServer>;

async fn run(path: &Path, config: Config, snapshot: Snapshot) -> anyhow::Result<()> {
    // Signals first: a SIGHUP sent as soon as `ready` is read must find
    // its handler in place, not the default action (exit).
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let dns = Dns::new(snapshot);
    let mut listeners = Listeners::new();
    // At start a listen address that cannot be bound is fatal.
    for (key, result) in listen(&dns, &mut listeners, &config).await {
        result.with_context(|| format!("network {}: cannot listen on {}", key.0, key.1))?;
    }
    drop(config);
    println!("ready");

    loop {
        tokio::select! {
            _ = hup.recv() => reload(path, &dns, &mut listeners).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    for (_, server) in listeners {
        if let Err(e) = server.shutdown().await {
            warn!(error = %e, "server loop ended with an error");
        }
    }
    Ok(())
}

/// Makes the running listeners those of `config`: stops the ones it no
/// longer has, binds and serves the new ones. Returns the outcome of each
/// new bind.
async fn listen(
    dns: &Dns,
    listeners: &mut Listeners,
    config: &Config,
) -> Vec<((String, SocketAddr), std::io::Result<()>)> {
    let wanted: BTreeSet<(String, SocketAddr)> = config
        .listen
        .iter()
        .flat_map(|(n, addrs)| addrs.iter().map(move |a| (n.clone(), *a)))
        .collect();
    let gone: Vec<_> = listeners
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(server) = listeners.remove(&key) {
            info!(network = %key.0, addr = %key.1, "no longer listening");
            println!("stopped {} {}", key.0, key.1);
            if let Err(e) = server.shutdown().await {
                warn!(error = %e, "server loop ended with an error");
            }
        }
    }
    let mut outcomes = Vec::new();
    for key in wanted {
        if listeners.contains_key(&key) {
            continue;
        }
        let (network, addr) = (&key.0, key.1);
        let result = match server::bind(addr).await {
            Ok((udp, tcp)) => {
                let bound = udp.local_addr().unwrap_or(addr);
                info!(%network, %bound, "listening (UDP and TCP)");
                println!("listening {network} {bound}");
                listeners.insert(key.clone(), dns.serve(network, vec![udp], vec![tcp]));
                Ok(())
            }
            Err(e) => Err(e),
        };
        outcomes.push((key, result));
    }
    outcomes
}

/// Loads the file again (off the workers that answer queries: a large
/// file takes a while), swaps its records in and adjusts the listeners; a
/// bad file changes nothing.
async fn reload(path: &Path, dns: &Dns, listeners: &mut Listeners) {
    let file = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || Config::load_with_snapshot(&file)).await;
    let (config, snapshot) = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            error!("reload failed, keeping the current records: {e}");
            println!("reload-failed");
            return;
        }
        Err(e) => {
            error!("reload failed, keeping the current records: {e}");
            println!("reload-failed");
            return;
        }
    };
    dns.store(snapshot);
    for ((network, addr), result) in listen(dns, listeners, &config).await {
        if let Err(e) = result {
            error!("network {network}: cannot listen on {addr}: {e}");
        }
    }
    // Free the parsed file off the workers too.
    tokio::task::spawn_blocking(move || drop(config));
    info!("reloaded");
    println!("reloaded");
}
