//! `netd run`: a command in a new container attached to a network, in the
//! foreground. The agent makes the container (namespace, address, DNS,
//! endpoint); this process starts the command inside it through
//! `netd __enter`, tells the agent its pid, forwards SIGINT and SIGTERM to
//! it, and exits with its status. The agent watches the pid itself, so the
//! task's endpoint goes when the command exits, even if this client was
//! killed first.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use crate::api::client::Client;
use crate::tasks::{Task, TaskSpec};

/// `netd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The network to attach to.
    #[arg(long)]
    pub network: String,
    /// The service this task is a replica of.
    #[arg(long)]
    pub service: Option<String>,
    /// The task's name (its DNS name); default `<service>.<hex>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Its weight in balancing.
    #[arg(long)]
    pub weight: Option<u32>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `netd __enter` (internal): the contract of
/// [`crate::container::command_in`].
#[derive(Debug, Args)]
pub struct EnterArgs {
    /// The container namespace (under /run/netns).
    #[arg(long)]
    pub netns: String,
    /// The resolv.conf to mount over /etc/resolv.conf.
    #[arg(long)]
    pub resolv: PathBuf,
    /// The hostname inside.
    #[arg(long)]
    pub hostname: Option<String>,
    /// The command.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Enters the container and execs; returns only on failure.
pub fn enter(a: &EnterArgs) -> i32 {
    // The agent mounts namespaces among the host's mounts; a client started
    // in a copy of them (`ip netns exec`) finds them there.
    if let Err(e) = shoal_overlay::host_mounts::join_host_mounts() {
        eprintln!("netd: {e}");
        return 126;
    }
    let e = crate::container::enter_and_exec(&a.netns, &a.resolv, a.hostname.as_deref(), &a.argv);
    eprintln!("netd: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Runs `netd run`; returns the exit code (the command's own).
pub async fn run(client: &Client, a: &RunArgs) -> i32 {
    let spec = TaskSpec {
        network: a.network.clone(),
        service: a.service.clone(),
        name: a.name.clone(),
        weight: a.weight,
        slot: None,
    };
    let task: Task = match client.call("POST", "/v1/tasks", Some(&spec)).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("netd: {e}");
            return super::exit_code(&e);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("netd: cannot find this program's path: {e}");
            end(client, &task.name).await;
            return 1;
        }
    };
    let cmd = crate::container::command_in(
        &exe,
        &task.netns,
        &task.resolv_conf,
        Some(&task.name),
        &a.command,
    );
    let mut child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netd: cannot start `{}`: {e}", a.command[0]);
            end(client, &task.name).await;
            return 127;
        }
    };
    let pid = child.id().unwrap_or(0);
    let body = serde_json::json!({ "pid": pid });
    if let Err(e) = client
        .call::<Value>("POST", &format!("/v1/tasks/{}/pid", task.name), Some(&body))
        .await
    {
        eprintln!("netd: the agent did not take the task's process: {e}; stopping it");
        let _ = child.start_kill();
        let _ = child.wait().await;
        end(client, &task.name).await;
        return 1;
    }
    let status = wait_forwarding_signals(&mut child, pid).await;
    end(client, &task.name).await;
    match status {
        Some(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        None => 1,
    }
}

async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
    pid: u32,
) -> Option<std::process::ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return child.wait().await.ok();
    };
    let forward = |sig: nix::sys::signal::Signal| {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    };
    loop {
        tokio::select! {
            s = child.wait() => return s.ok(),
            _ = int.recv() => forward(nix::sys::signal::Signal::SIGINT),
            _ = term.recv() => forward(nix::sys::signal::Signal::SIGTERM),
        }
    }
}

/// Tells the agent the task is over (it may already know).
async fn end(client: &Client, name: &str) {
    let _ = client
        .call::<Value>("DELETE", &format!("/v1/tasks/{name}"), None::<&()>)
        .await;
}
