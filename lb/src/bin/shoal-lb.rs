//! `shoal-lb`: the TCP load balancer. See `shoal-lb --help`.
//!
//! Exit codes: 0 after a clean stop, 1 when it cannot start (a port in use),
//! 2 for bad flags or config.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use shoal_lb::cli::Cli;
use shoal_lb::config::Config;
use shoal_lb::runtime::{self, Runtime};
use tokio::signal::unix::{signal, SignalKind};

// pingora allocates per request; mimalloc's thread-local free lists serve
// those small, short-lived blocks faster than glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-lb: error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("shoal-lb: error: --log `{}`: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    for l in config.fully_drained() {
        tracing::warn!(listener = %l.name, "every backend has weight 0: connections will be closed until one has a weight");
    }
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal-lb: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal-lb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let admin = config.admin;
    let lb = Runtime::start(config)?;
    if let Some(addr) = admin {
        let tcp = runtime::bind(addr).with_context(|| format!("admin: cannot listen on {addr}"))?;
        let rt = Arc::clone(&lb);
        tokio::spawn(async move {
            if let Err(e) = shoal_lb::admin::serve(tcp, rt).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        tracing::info!(%addr, "admin listening");
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&cli, &lb),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // The config in force includes any reload and the --drain-timeout flag.
    let drain_timeout = lb.config().drain_timeout;
    if lb.drain(drain_timeout).await {
        tracing::info!("all connections finished; stopped");
    } else {
        tracing::warn!(
            open = lb.open_connections(),
            "drain deadline passed; closing the rest"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn reload(cli: &Cli, lb: &Runtime) {
    if cli.config.is_none() {
        tracing::warn!("SIGHUP: nothing to reload (started without --config)");
        return;
    }
    let applied = cli.to_config().map_err(anyhow::Error::from).and_then(|c| {
        if c.admin != lb.config().admin {
            tracing::warn!("admin address changes take effect on restart");
        }
        lb.apply(c).map_err(anyhow::Error::from)
    });
    match applied {
        Ok(()) => tracing::info!("configuration reloaded"),
        Err(e) => tracing::error!(error = %e, "reload rejected; the previous configuration stays"),
    }
}
