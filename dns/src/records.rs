//! Records in: the plain data a [`Snapshot`](crate::Snapshot) is built from.
//!
//! These types carry no DNS machinery and no validation; they are what a
//! caller (netd, or the `shoal-dns` config file) knows about a network:
//! its services, their VIPs, ports and tasks, and each task's health.
//! [`Snapshot::build`](crate::Snapshot::build) checks them and compiles
//! them into lookup tables.

use std::net::IpAddr;

/// Every record the DNS serves, for every network it has a view of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// The cluster domain (e.g. `shoal`); every name is also served under it.
    pub domain: String,
    /// TTL in seconds of every local answer (and the SOA minimum).
    pub ttl: u32,
    /// The networks; each one is a view, answered on its own listeners.
    pub networks: Vec<Network>,
}

impl Default for RecordSet {
    fn default() -> Self {
        Self {
            domain: DEFAULT_DOMAIN.to_string(),
            ttl: DEFAULT_TTL,
            networks: Vec::new(),
        }
    }
}

/// The default cluster domain.
pub const DEFAULT_DOMAIN: &str = "shoal";
/// The default TTL of local answers, in seconds.
pub const DEFAULT_TTL: u32 = 5;

/// One network: the services on it, seen by the containers attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// The network's name: one DNS label (the `<network>` in `web.<network>`).
    pub name: String,
    /// The services attached to this network.
    pub services: Vec<Service>,
    /// Other networks whose names this network's view also answers (for
    /// containers attached to several networks behind one resolver). Names
    /// of this network win over theirs.
    pub also: Vec<String>,
}

/// A service: a name, perhaps a VIP, some ports and the tasks behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service's name (one or more DNS labels).
    pub name: String,
    /// The virtual IP; required when `endpoint_mode` is [`EndpointMode::Vip`].
    pub vip: Option<IpAddr>,
    /// What `<service>` answers with.
    pub endpoint_mode: EndpointMode,
    /// Named ports, served as SRV `_<name>._<protocol>.<service>`.
    pub ports: Vec<Port>,
    /// The service's tasks (replicas).
    pub tasks: Vec<Task>,
}

/// What the bare service name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointMode {
    /// The VIP.
    #[default]
    Vip,
    /// The healthy tasks' IPs, shuffled per answer (DNS round robin).
    Dnsrr,
}

/// A named port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The port's name (one DNS label, without the leading `_`).
    pub name: String,
    /// The port number.
    pub port: u16,
    /// The transport protocol.
    pub protocol: Protocol,
}

/// A transport protocol of a [`Port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// TCP (`_tcp`).
    #[default]
    Tcp,
    /// UDP (`_udp`).
    Udp,
    /// SCTP (`_sctp`).
    Sctp,
}

impl Protocol {
    /// The SRV label of the protocol, without the leading `_`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A task (replica) of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task's name (one or more DNS labels, e.g. `web.1`).
    pub name: String,
    /// The task's address on this network.
    pub ip: IpAddr,
    /// Whether the task passes its health checks; unhealthy tasks are
    /// never answered, under any name.
    pub healthy: bool,
}
