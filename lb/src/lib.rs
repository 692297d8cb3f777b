//! shoal-lb: balancing policies, health, and TCP and HTTP proxies.
//!
//! The crate is useful alone: give it a set of backends and it balances TCP
//! connections across them (the `shoal-lb` binary), or hand a [`pool::Pool`]
//! to another proxy. It knows nothing of clusters, DNS or overlays.
//!
//! # Layout
//! - [`backend`]: a backend as configured (`ADDR[@WEIGHT][,backup]`).
//! - [`endpoint`]: a backend's live state (load, health, ejection, slow
//!   start, latency estimate), which survives backend-set updates.
//! - [`policy`]: the [`policy::Policy`] trait and one file per algorithm.
//! - [`health`]: active checks, passive ejection and their settings.
//! - [`http`]: HTTP mode on pingora: the same pools behind an HTTP proxy.
//! - [`pool`]: backends + policy + health rules = the candidates a pick sees.
//! - [`hash`]: the stable hash behind the hash policies.
//! - [`proxy`]: the TCP proxy: accept, pick, connect with retry, splice.
//! - [`proxy_protocol`]: PROXY v1/v2 headers, read from front balancers and
//!   sent to backends.
//! - [`config`]: the `shoal-lb` configuration, from a TOML file; [`cli`]
//!   builds the same from flags.
//! - [`admin`]: the admin listener (`/metrics`, `/backends`); [`metrics`]
//!   renders the Prometheus text.
//! - [`runtime`]: listeners started from a config, reload and drain.
//! - [`sockets`]: where a listener's sockets are made (which namespace,
//!   which source address).

pub mod admin;
pub mod backend;
pub mod cli;
pub mod config;

pub mod endpoint;
pub mod hash;
pub mod health;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod runtime;
pub mod sockets;

pub use backend::Backend;
pub use policy::{Policy, PolicyKind};
pub use pool::{Pool, PoolConfig};
