//! The `netd` command: `netd agent` runs a node's agent; the other
//! subcommands are Docker-like clients of an agent's API (found by `--api`
//! or `SHOAL_API`).
//!
//! Exit codes: 0 done; 1 failed (agent unreachable, not found, conflict);
//! 2 usage error (a bad flag or value, whether the CLI or the agent caught
//! it).

pub mod agent;
pub mod commands;
pub mod output;
pub mod run;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use crate::api::client::{ApiAddr, Client, ClientError};
use crate::api::DEFAULT_API;

/// shoal's node agent and its client.
#[derive(Debug, Parser)]
#[command(name = "netd", version, about, propagate_version = true)]
pub struct Cli {
    /// The agent's API: unix:///path or http://IP:PORT. The agent listens
    /// there; clients connect there.
    #[arg(long, global = true, env = "SHOAL_API", default_value = DEFAULT_API)]
    pub api: ApiAddr,
    /// A file holding the API token (TCP API only).
    #[arg(long, global = true, env = "SHOAL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run this node's agent.
    Agent(agent::AgentArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Show nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Run a command in a new container attached to a network.
    Run(run::RunArgs),
    /// Deploy or remove compose stacks.
    #[command(subcommand)]
    Stack(StackCmd),
    /// (internal) Enter a container and exec a command.
    #[command(name = "__enter", hide = true)]
    Enter(run::EnterArgs),
}

/// `netd network …`.
#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create(NetworkCreate),
    /// List networks.
    Ls,
    /// Show a network.
    Inspect {
        /// Its name.
        name: String,
    },
    /// Remove networks.
    Rm {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `netd network create`.
#[derive(Debug, Args)]
pub struct NetworkCreate {
    /// Its name.
    pub name: String,
    /// Its subnet (default: a free /24 from 10.96.0.0/11).
    #[arg(long)]
    pub subnet: Option<Ipv4Net>,
    /// Its gateway (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// Its VXLAN id (default: the lowest free from 4096).
    #[arg(long)]
    pub vni: Option<u32>,
    /// Carry it over the WireGuard mesh.
    #[arg(long)]
    pub encrypted: bool,
    /// A fixed MTU (default: the underlay's minus the overhead).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

/// Service settings shared by create and update.
#[derive(Debug, Args, Default)]
pub struct ServiceOpts {
    /// A published port, PUBLISHED:TARGET[/tcp|/http] (repeatable; on
    /// every node's address).
    #[arg(long = "publish", short = 'p', value_parser = parse_port)]
    pub publish: Vec<crate::model::Port>,
    /// A port served on the VIP only, TARGET[/tcp|/http] (repeatable).
    #[arg(long = "port", value_parser = parse_port)]
    pub port: Vec<crate::model::Port>,
    /// Balancing policy (round-robin, weighted, least-conn,
    /// p2c, peak-ewma, random, maglev, ring-hash).
    #[arg(long)]
    pub policy: Option<crate::model::Policy>,
    /// Health check of replicas: none, tcp or http:/path.
    #[arg(long)]
    pub health: Option<crate::model::Probe>,
    /// Time between checks (e.g. 1s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub health_interval: Option<std::time::Duration>,
    /// Time before a check fails.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub health_timeout: Option<std::time::Duration>,
    /// Passes that make a replica healthy.
    #[arg(long)]
    pub health_rise: Option<u32>,
    /// Failures that make it unhealthy.
    #[arg(long)]
    pub health_fall: Option<u32>,
    /// How the client's address reaches replicas: none, proxy-v2, forwarded.
    #[arg(long, value_parser = parse_client_address)]
    pub client_address: Option<crate::model::ClientAddress>,
    /// Replicas netd runs itself (needs a command after `--`).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The command netd-run replicas execute.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `netd service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a service.
    Create {
        /// Its name.
        name: String,
        /// A network it joins (repeatable; at least one).
        #[arg(long = "network", required = true)]
        networks: Vec<String>,
        /// vip (a virtual IP balanced by every node) or dnsrr (names
        /// return the replicas).
        #[arg(long, value_parser = parse_endpoint_mode)]
        endpoint_mode: Option<crate::model::EndpointMode>,
        /// Settings.
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Change a service (only the settings given).
    Update {
        /// Its name.
        name: String,
        /// Switch between vip and dnsrr.
        #[arg(long, value_parser = parse_endpoint_mode)]
        endpoint_mode: Option<crate::model::EndpointMode>,
        /// Settings.
        #[command(flatten)]
        opts: ServiceOpts,
    },
    /// Set replica counts: SERVICE=N ...
    Scale {
        /// SERVICE=REPLICAS pairs.
        #[arg(required = true, value_parser = parse_scale)]
        pairs: Vec<(String, u32)>,
    },
    /// List services.
    Ls,
    /// Show a service.
    Inspect {
        /// Its name.
        name: String,
    },
    /// List a service's tasks on every node.
    Ps {
        /// Its name.
        name: String,
    },
    /// Remove services.
    Rm {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `netd node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List live nodes.
    Ls,
}

/// `netd stack …`.
#[derive(Debug, Subcommand)]
pub enum StackCmd {
    /// Create or update a stack from a compose file.
    Deploy {
        /// The compose file.
        #[arg(long = "compose-file", short = 'c')]
        file: PathBuf,
        /// The stack's name.
        name: String,
    },
    /// Remove a stack's services and networks.
    Rm {
        /// The stack's name.
        name: String,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    crate::spec::parse_label(s).map_err(|e| e.0)
}

fn parse_port(s: &str) -> Result<crate::model::Port, String> {
    crate::spec::parse_port(s).map_err(|e| e.0)
}

fn parse_client_address(s: &str) -> Result<crate::model::ClientAddress, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("`{s}`: expected none, proxy-v2 or forwarded"))
}

fn parse_endpoint_mode(s: &str) -> Result<crate::model::EndpointMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("`{s}`: expected vip or dnsrr"))
}

fn parse_scale(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected SERVICE=REPLICAS"))?;
    let n = n
        .parse()
        .map_err(|_| format!("`{s}`: `{n}` is not a replica count"))?;
    Ok((name.to_string(), n))
}

/// A client error's exit code: 2 for bad input, 1 otherwise.
pub fn exit_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Api(a) if a.status == 400 => 2,
        _ => 1,
    }
}

impl Cli {
    /// A client of the agent this command names.
    pub fn client(&self) -> Result<Client, String> {
        let token = match &self.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("--token-file {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Client::new(self.api.clone(), token))
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Enter(ref a) => run::enter(a),
        Command::Agent(ref a) => agent::main(&cli, a),
        _ => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("netd: cannot start a runtime: {e}");
                    return 1;
                }
            };
            rt.block_on(commands::dispatch(&cli))
        }
    }
}
