//! shoal-dns: service DNS for shoal networks, on hickory-server.
//!
//! Records in, answers out. A caller (netd, or the `shoal-dns` binary
//! reading a TOML file) hands over a [`RecordSet`]: networks, their
//! services (VIP or DNS round robin, named ports) and tasks with their
//! health. [`Snapshot::build`] checks it and compiles lookup tables;
//! [`Dns`] holds the current snapshot behind an `ArcSwap`, so an update is
//! one pointer swap and a query never waits for it. Each network is a view,
//! served on its own sockets: a container sees only its networks' names.
//! Names that are not ours go to the upstreams (with a timeout and a small
//! cache); when they all fail the client gets SERVFAIL, never silence.
//! The crate knows nothing of clusters, etcd, overlays or balancing.
//!
//! # Layout
//! - [`records`]: the input data (record set, network, service, task, port).
//! - [`snapshot`]: a record set checked and compiled into per-network
//!   tables; immutable. `hash`: the tables' hasher.
//! - `name`: configured-name checks and query names as lookup keys.
//! - `answer`: one question against one view: pure, no I/O.
//! - [`handler`]: the hickory `RequestHandler` of a view: loads the
//!   snapshot, answers or forwards, hands hickory the response.
//! - [`forward`]: asking the upstreams (UDP, TCP on truncation, one overall
//!   timeout); `cache` keeps their answers for their TTL.
//! - [`server`]: [`Dns`] (the snapshot holder) and the server loops per
//!   network: `udp` (our loop: answers in place, spawns only forwards) and
//!   hickory's for TCP; [`server::bind`] binds UDP and TCP on one port.
//! - [`wire`]: bytes in, bytes out through the handler, without a socket:
//!   the steps the UDP loop runs, and the fuzz target's entry. `fast`
//!   answers the common UDP request straight from its bytes (no hickory
//!   parse, no allocation), and writes the general path's local replies
//!   straight to the wire (hickory's encoder is the fallback, and the only
//!   one on TCP).
//! - [`config`]: the `shoal-dns` TOML file; [`error`]: the edge errors.
//!
//! The `shoal-dns` binary (`src/bin/shoal-dns.rs`) serves a config file and
//! reloads it on SIGHUP.

#![forbid(unsafe_code)]

mod answer;
mod cache;
pub mod config;
pub mod error;
mod fast;
pub mod forward;
pub mod handler;
mod hash;
mod name;
pub mod records;
pub mod server;
pub mod snapshot;
mod udp;
pub mod wire;

pub use config::Config;
pub use error::{ConfigError, Location, Problem, RecordError};
pub use forward::Forwarding;
pub use handler::ViewHandler;
pub use records::{EndpointMode, Network, Port, Protocol, RecordSet, Service, Task};
pub use server::{Dns, DnsServer};
pub use snapshot::Snapshot;
