//! The client subcommands: each builds a request from its flags, sends it
//! to the agent and prints the answer as a table or JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use super::output::{print_json, Table};
use super::{
    exit_code, Cli, Command, Format, NetworkCmd, NodeCmd, ServiceCmd, ServiceOpts, StackCmd,
};
use crate::api::client::{Client, ClientError};
use crate::model::{Endpoint, HealthCheck, Network, Node, Service};
use crate::ops::{StackRemoval, StackReport};
use crate::spec::{NetworkSpec, ServiceUpdate};

/// Runs a client subcommand; returns the exit code.
pub async fn dispatch(cli: &Cli) -> i32 {
    let client = match cli.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netd: {e}");
            return 2;
        }
    };
    let result = match &cli.command {
        Command::Network(c) => network(&client, cli.format, c).await,
        Command::Service(c) => service(&client, cli.format, c).await,
        Command::Node(NodeCmd::Ls) => nodes(&client, cli.format).await,
        Command::Stack(c) => stack(&client, cli.format, c).await,
        Command::Run(a) => return super::run::run(&client, a).await,
        Command::Agent(_) | Command::Enter(_) => Ok(()),
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Client(e)) => {
            eprintln!("netd: {e}");
            exit_code(&e)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("netd: {m}");
            2
        }
    }
}

/// Why a command failed.
pub enum Failure {
    /// The agent or the connection.
    Client(ClientError),
    /// Bad input caught before sending.
    Usage(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

type Done = Result<(), Failure>;

/// Notes one removal of a multi-name `rm`: its name is printed at once
/// (table), or collected for one JSON list printed at the end. On an
/// error, the names removed before it are still printed.
fn removed(f: Format, done: &mut Vec<String>, name: &str, r: Result<Value, ClientError>) -> Done {
    match r {
        Ok(_) => {
            match f {
                Format::Json => done.push(name.to_string()),
                Format::Table => println!("{name}"),
            }
            Ok(())
        }
        Err(e) => {
            if f == Format::Json && !done.is_empty() {
                print_json(done);
            }
            Err(e.into())
        }
    }
}

fn labels(l: &[(String, String)]) -> BTreeMap<String, String> {
    l.iter().cloned().collect()
}

async fn network(c: &Client, f: Format, cmd: &NetworkCmd) -> Done {
    match cmd {
        NetworkCmd::Create(a) => {
            let spec = NetworkSpec {
                name: a.name.clone(),
                subnet: a.subnet,
                gateway: a.gateway,
                vni: a.vni,
                encrypted: a.encrypted,
                mtu: a.mtu,
                labels: labels(&a.labels),
            };
            let n: Network = c.call("POST", "/v1/networks", Some(&spec)).await?;
            match f {
                Format::Json => print_json(&n),
                Format::Table => println!("{}", n.name),
            }
        }
        NetworkCmd::Ls => {
            let nets: Vec<Network> = c.call("GET", "/v1/networks", None::<&()>).await?;
            match f {
                Format::Json => print_json(&nets),
                Format::Table => {
                    let mut t = Table::new(["NAME", "SUBNET", "GATEWAY", "VNI", "ENCRYPTED"]);
                    for n in &nets {
                        t.row([
                            n.name.clone(),
                            n.subnet.to_string(),
                            n.gateway.to_string(),
                            n.vni.to_string(),
                            n.encrypted.to_string(),
                        ]);
                    }
                    t.print();
                }
            }
        }
        NetworkCmd::Inspect { name } => {
            let n: Value = c
                .call("GET", &format!("/v1/networks/{name}"), None::<&()>)
                .await?;
            print_json(&n);
        }
        NetworkCmd::Rm { names } => {
            let mut done = Vec::new();
            for name in names {
                let r = c
                    .call::<Value>("DELETE", &format!("/v1/networks/{name}"), None::<&()>)
                    .await;
                removed(f, &mut done, name, r)?;
            }
            if f == Format::Json {
                print_json(&done);
            }
        }
    }
    Ok(())
}

fn health(o: &ServiceOpts, base: Option<HealthCheck>) -> Option<HealthCheck> {
    let given = o.health.is_some()
        || o.health_interval.is_some()
        || o.health_timeout.is_some()
        || o.health_rise.is_some()
        || o.health_fall.is_some();
    if !given {
        return base;
    }
    let mut h = base.unwrap_or_default();
    if let Some(c) = &o.health {
        h.check = c.clone();
    }
    if let Some(d) = o.health_interval {
        h.interval_ms = d.as_millis() as u64;
    }
    if let Some(d) = o.health_timeout {
        h.timeout_ms = d.as_millis() as u64;
    } else if o.health_interval.is_some() {
        // A shorter interval given alone brings the default timeout down.
        h.timeout_ms = h.timeout_ms.min(h.interval_ms);
    }
    if let Some(r) = o.health_rise {
        h.rise = r;
    }
    if let Some(r) = o.health_fall {
        h.fall = r;
    }
    Some(h)
}

fn ports(o: &ServiceOpts) -> Vec<crate::model::Port> {
    o.port.iter().chain(&o.publish).cloned().collect()
}

async fn service(c: &Client, f: Format, cmd: &ServiceCmd) -> Done {
    match cmd {
        ServiceCmd::Create {
            name,
            networks,
            endpoint_mode,
            opts,
        } => {
            let svc = Service {
                name: name.clone(),
                networks: networks.iter().map(|n| (n.clone(), None)).collect(),
                ports: ports(opts),
                endpoint_mode: endpoint_mode.unwrap_or_default(),
                policy: opts.policy.unwrap_or(crate::model::Policy::RoundRobin),
                health: health(opts, None).unwrap_or_default(),
                client_address: opts.client_address.unwrap_or_default(),
                replicas: opts.replicas.unwrap_or(u32::from(!opts.command.is_empty())),
                command: opts.command.clone(),
                labels: labels(&opts.labels),
            };
            let s: Service = c.call("POST", "/v1/services", Some(&svc)).await?;
            match f {
                Format::Json => print_json(&s),
                Format::Table => println!("{}", s.name),
            }
        }
        ServiceCmd::Update {
            name,
            endpoint_mode,
            opts,
        } => {
            let current: Service = c
                .call("GET", &format!("/v1/services/{name}"), None::<&()>)
                .await?;
            let p = ports(opts);
            let update = ServiceUpdate {
                ports: (!p.is_empty()).then_some(p),
                policy: opts.policy,
                health: health(opts, Some(current.health.clone())).filter(|h| *h != current.health),
                client_address: opts.client_address,
                endpoint_mode: *endpoint_mode,
                replicas: opts.replicas,
                command: (!opts.command.is_empty()).then(|| opts.command.clone()),
                labels: (!opts.labels.is_empty()).then(|| {
                    let mut l = current.labels.clone();
                    l.extend(labels(&opts.labels));
                    l
                }),
            };
            let s: Service = c
                .call("PATCH", &format!("/v1/services/{name}"), Some(&update))
                .await?;
            match f {
                Format::Json => print_json(&s),
                Format::Table => println!("{}", s.name),
            }
        }
        ServiceCmd::Scale { pairs } => {
            let mut scaled = Vec::new();
            for (name, n) in pairs {
                let body = serde_json::json!({ "replicas": n });
                let s: Service = c
                    .call("POST", &format!("/v1/services/{name}/scale"), Some(&body))
                    .await?;
                match f {
                    Format::Json => scaled.push(s),
                    Format::Table => println!("{name} scaled to {n}"),
                }
            }
            if f == Format::Json {
                print_json(&scaled);
            }
        }
        ServiceCmd::Ls => {
            let svcs: Vec<Service> = c.call("GET", "/v1/services", None::<&()>).await?;
            match f {
                Format::Json => print_json(&svcs),
                Format::Table => {
                    let mut t = Table::new(["NAME", "MODE", "REPLICAS", "POLICY", "PORTS", "VIPS"]);
                    for s in &svcs {
                        t.row([
                            s.name.clone(),
                            format!("{:?}", s.endpoint_mode).to_lowercase(),
                            s.replicas.to_string(),
                            s.policy.to_string(),
                            s.ports
                                .iter()
                                .map(super::output::port)
                                .collect::<Vec<_>>()
                                .join(","),
                            s.networks
                                .iter()
                                .filter_map(|(n, v)| Some(format!("{n}:{}", (*v)?)))
                                .collect::<Vec<_>>()
                                .join(","),
                        ]);
                    }
                    t.print();
                }
            }
        }
        ServiceCmd::Inspect { name } => {
            let s: Value = c
                .call("GET", &format!("/v1/services/{name}"), None::<&()>)
                .await?;
            print_json(&s);
        }
        ServiceCmd::Ps { name } => {
            let eps: Vec<Endpoint> = c
                .call("GET", &format!("/v1/services/{name}/tasks"), None::<&()>)
                .await?;
            match f {
                Format::Json => print_json(&eps),
                Format::Table => {
                    let mut t = Table::new(["NAME", "NODE", "NETWORK", "IP", "WEIGHT", "STATE"]);
                    for e in &eps {
                        t.row([
                            e.name.clone(),
                            e.node.clone(),
                            e.network.clone(),
                            e.ip.to_string(),
                            e.weight.to_string(),
                            format!("{:?}", e.state).to_lowercase(),
                        ]);
                    }
                    t.print();
                }
            }
        }
        ServiceCmd::Rm { names } => {
            let mut done = Vec::new();
            for name in names {
                let r = c
                    .call::<Value>("DELETE", &format!("/v1/services/{name}"), None::<&()>)
                    .await;
                removed(f, &mut done, name, r)?;
            }
            if f == Format::Json {
                print_json(&done);
            }
        }
    }
    Ok(())
}

async fn nodes(c: &Client, f: Format) -> Done {
    let nodes: Vec<Node> = c.call("GET", "/v1/nodes", None::<&()>).await?;
    match f {
        Format::Json => print_json(&nodes),
        Format::Table => {
            let mut t = Table::new(["NAME", "ADVERTISE", "LB ADDRESSES"]);
            for n in &nodes {
                t.row([
                    n.name.clone(),
                    n.advertise.to_string(),
                    n.lb_addresses
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

async fn stack(c: &Client, f: Format, cmd: &StackCmd) -> Done {
    match cmd {
        StackCmd::Deploy { file, name } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let shown = file.display().to_string();
            let stack =
                crate::compose::parse(&shown, &text).map_err(|e| Failure::Usage(e.to_string()))?;
            for w in &stack.warnings {
                eprintln!("warning: {shown}: {w}");
            }
            let body = crate::api::server::StackBody {
                networks: stack.networks,
                services: stack.services,
            };
            let report: StackReport = c
                .call("POST", &format!("/v1/stacks/{name}"), Some(&body))
                .await?;
            match f {
                Format::Json => print_json(&report),
                Format::Table => super::output::print_report(&report),
            }
        }
        StackCmd::Rm { name } => {
            let r: StackRemoval = c
                .call("DELETE", &format!("/v1/stacks/{name}"), None::<&()>)
                .await?;
            match f {
                Format::Json => print_json(&r),
                Format::Table => {
                    for s in &r.services {
                        println!("removed service {s}");
                    }
                    for n in &r.networks {
                        println!("removed network {n}");
                    }
                }
            }
        }
    }
    Ok(())
}
