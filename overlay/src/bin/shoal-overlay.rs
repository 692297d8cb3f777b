//! `shoal-overlay`: applies a desired-state file to this machine's kernel.
//!
//! Exit codes: 0 on success, 1 when the kernel refused a change, 2 for bad
//! arguments or a bad file (one line naming the problem; nothing changed),
//! and for `apply` of a file whose encrypted network needs a userspace
//! WireGuard device (only `run` can host one; nothing changed).
//!
//! When the node needs a WireGuard device, `apply`, `diff` and `run` first
//! print one line starting `wireguard:` that names its backend and why.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_overlay::{Config, DeviceHost, Error, Overlay, Plan};
use tokio::signal::unix::{signal, SignalKind};

/// The shoal overlay datapath: VXLAN sandboxes, container attach, static
/// FDB/ARP, from a TOML file.
#[derive(Parser)]
#[command(name = "shoal-overlay", version, arg_required_else_help = false)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the kernel match FILE; prints each change.
    Apply {
        /// The desired-state file.
        file: PathBuf,
    },
    /// Print what `apply FILE` would change, without changing anything.
    Diff {
        /// The desired-state file.
        file: PathBuf,
    },
    /// Remove everything shoal created for FILE's node.
    Down {
        /// The desired-state file.
        file: PathBuf,
    },
    /// Apply FILE, stay in the foreground and re-apply on SIGHUP; on SIGTERM
    /// or SIGINT exit and leave the datapath in place, except a userspace
    /// WireGuard device, which lives in this process and stops with it
    /// (encrypted networks resume when `run` starts again).
    Run {
        /// The desired-state file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("shoal-overlay: {} (see --help)", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // While the process has one thread: namespaces belong among the host's
    // mounts, wherever this was started.
    match shoal_overlay::host_mounts::join_host_mounts() {
        Ok(true) => {
            tracing::info!("started in a copy of the host's mount namespace; joined the host's")
        }
        Ok(false) => {}
        Err(e) => {
            eprintln!("shoal-overlay: {e}; start it with `nsenter --net=...` instead");
            return ExitCode::FAILURE;
        }
    }
    match cli.command {
        Command::Apply { file } => once(&file, |o| o.apply()),
        Command::Diff { file } => once(&file, |o| o.plan()),
        Command::Down { file } => once(&file, |o| o.down()),
        Command::Run { file } => run(file),
    }
}

/// Clap's message in one line: its first line, plus the next when the first
/// only introduces it ("the following required arguments were not provided:").
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match (first.ends_with(':'), lines.next()) {
        (true, Some(next)) => format!("{first} {next}"),
        _ => first.to_string(),
    }
}

/// Loads and validates FILE; a bad file is a usage error (exit 2).
fn load(file: &std::path::Path) -> Result<Overlay, ExitCode> {
    let overlay = Config::load(file)
        .map_err(Error::from)
        .and_then(Overlay::new);
    overlay.map_err(|e| {
        eprintln!("shoal-overlay: {}: {e}", file.display());
        ExitCode::from(2)
    })
}

fn once(
    file: &std::path::Path,
    op: impl FnOnce(&Overlay) -> Result<shoal_overlay::Plan, Error>,
) -> ExitCode {
    let overlay = match load(file) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match op(&overlay) {
        Ok(plan) => {
            report(&plan, None);
            ExitCode::SUCCESS
        }
        Err(e @ Error::NeedsHost(_)) => {
            eprintln!("shoal-overlay: {}: {e}", file.display());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("shoal-overlay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the plan's notes, then its steps (after `header`) or `no changes`.
fn report(plan: &Plan, header: Option<&str>) {
    for note in &plan.notes {
        println!("{note}");
    }
    match (plan.is_empty(), header) {
        (true, None) => println!("no changes"),
        (true, Some(h)) => println!("{h} no changes"),
        (false, None) => print!("{plan}"),
        (false, Some(h)) => print!("{h}\n{plan}"),
    }
}

fn run(file: PathBuf) -> ExitCode {
    let overlay = match load(&file) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut host = DeviceHost::new();
    match overlay.apply_hosting(&mut host) {
        Ok(plan) => {
            for note in &plan.notes {
                println!("{note}");
            }
            print!("{plan}");
        }
        Err(e) => {
            eprintln!("shoal-overlay: {e}");
            return ExitCode::FAILURE;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal-overlay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(file, host)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for signals: SIGHUP re-reads and re-applies FILE (a bad file or a
/// failed apply is reported and the last good state stays); SIGTERM/SIGINT
/// end the process, leaving the datapath as it is but for the userspace
/// WireGuard devices `host` keeps, which stop when it is dropped.
async fn serve(file: PathBuf, host: DeviceHost) -> anyhow::Result<()> {
    let mut host = Some(host);
    let mut hup = signal(SignalKind::hangup()).context("listen for SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    println!("ready");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(h) = host.take() else { continue };
                let (stopped, h) = tokio::task::spawn_blocking(move || (h.stopped(), h))
                    .await
                    .context("device check task")?;
                host = Some(h);
                if !stopped.is_empty() {
                    println!(
                        "wireguard: userspace device {} stopped on its own (`down` removed its socket, or its link was deleted); exiting",
                        stopped.join(", ")
                    );
                    return Ok(());
                }
            }
            _ = hup.recv() => {
                let f = file.clone();
                let mut h = host.take().context("device host")?;
                let (outcome, h) = tokio::task::spawn_blocking(move || {
                    let outcome = Config::load(&f)
                        .map_err(Error::from)
                        .and_then(Overlay::new)
                        .and_then(|o| o.apply_hosting(&mut h));
                    (outcome, h)
                })
                .await
                .context("re-apply task")?;
                host = Some(h);
                match outcome {
                    Ok(plan) => report(&plan, Some("reloaded:")),
                    Err(e) => eprintln!("shoal-overlay: reload of {} failed, keeping the datapath: {e}", file.display()),
                }
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}
