//! shoal-tests: shared test support for suites that need test hosts.
//!
//! A "node" is a network namespace with one veth on an underlay bridge that
//! lives in its own underlay namespace; a "container" is a bare namespace.
//! Nothing is created in, or routed from, the machine's root namespace.
//! Every name carries a per-run prefix, and [`Lab`] removes every namespace
//! and process it made when dropped, panic included, so suites can run side
//! by side and leave nothing behind. The fixtures drive iproute2 (`ip`):
//! they are scaffolding, not product.
//!
//! Suites that need a crate's binary live next to that crate (for example
//! `overlay/tests/`), where Cargo hands them the binary, and use this crate
//! as a dev-dependency.
//!
//! # Layout
//! - [`cluster`]: [`Cluster`], a whole shoal cluster (nodes, a three-member etcd, a netd agent each) and its faults.
//! - [`lab`]: [`Lab`], the guard owning a run's namespaces and processes; nodes and containers.
//! - [`cmd`]: running `ip` and other commands, failing loudly with their stderr.
//! - [`dns`]: one A query from inside a namespace.
//! - [`etcd`]: a real single-member etcd on loopback.
//! - [`sock`]: TCP sockets opened inside a namespace, for traffic checks.
//! - [`proc`]: [`Proc`], a child process stopped with SIGTERM, then SIGKILL, on drop.
//! - [`snapshot`]: a text picture of a namespace's links, addresses, neighbours, FDB and routes.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod cmd;
pub mod dns;
pub mod etcd;
pub mod lab;
pub mod proc;
pub mod snapshot;
pub mod sock;

pub use cluster::{Cluster, ClusterSpec};
pub use lab::{Lab, Node};
pub use proc::Proc;
