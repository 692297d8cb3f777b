//! HTTP mode: the same pools and policies behind pingora's HTTP proxy.
//!
//! A listener in HTTP mode hands each accepted connection to a pingora
//! [`HttpProxy`](pingora_proxy::HttpProxy) driven by our [`balancer::Balancer`]
//! (pingora's own selection lacks least-conn and smooth weights). Pingora
//! parses HTTP/1.1 and h2c, pools upstream connections and speaks HTTP/2 to
//! backends when asked; the balancer picks the backend, retries idempotent
//! requests on another one within a [`budget::RetryBudget`], feeds passive
//! health from responses, adds the client's address, and counts.
//!
//! # Layout
//! - [`balancer`]: the `ProxyHttp` implementation.
//! - [`budget`]: the retry budget.
//! - [`hash_key`]: where hash policies take their key from.
//! - [`forwarded`]: `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`.
//! - [`h1`]: the HTTP/1.1 fast path, which carries plain keep-alive
//!   requests itself and hands everything else to pingora.
//! - [`io`]: the write buffer in front of client connections.
//! - [`serve`]: the listener's HTTP state and the hand-off to pingora.
//! - [`stats`]: status-class counters and latency histograms.
//! - [`tls`]: certificates and the TLS acceptor (ALPN h2, http/1.1).
//! - [`upstream`]: the connector that sends PROXY v2 to backends.
//! - [`validate`]: request checks before any backend sees a request.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::humantime_serde_compat as hts;

pub mod balancer;
pub mod budget;
pub mod forwarded;
pub mod h1;
pub mod hash_key;
pub mod io;
pub mod serve;
pub mod stats;
pub mod tls;
pub mod upstream;
pub mod validate;

pub use hash_key::HashKey;

/// Settings of a listener in HTTP mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Where `maglev` and `ring-hash` take their key.
    pub hash_key: HashKey,
    /// Longest wait for any read from a backend, the first byte of the
    /// response included (0s = no limit).
    #[serde(with = "hts")]
    pub read_timeout: Duration,
    /// Time budget of a request from its arrival, retries included: no retry
    /// starts after it, and each attempt's connect, writes and reads are
    /// bounded by what is left of it (0s = no limit). A response that keeps
    /// trickling bytes can outlast it by at most one read.
    #[serde(with = "hts")]
    pub total_timeout: Duration,
    /// Most retries of one request (idempotent requests only).
    pub retries: u32,
    /// Retries allowed as a share of requests, in percent, over a sliding
    /// second ...
    pub retry_budget_percent: u32,
    /// ... but at least this many retries per second.
    pub retry_budget_min_per_sec: u32,
    /// Speak HTTP/2 (prior knowledge) to backends.
    pub upstream_h2: bool,
    /// Accept HTTP/2 with prior knowledge (h2c) from clients.
    pub h2c: bool,
    /// Add `X-Forwarded-For`, `Forwarded` and `X-Forwarded-Proto`.
    pub forwarded_headers: bool,
    /// Idle upstream connections kept per backend for reuse.
    pub pool_size: usize,
    /// Serve TLS with this certificate chain (PEM); needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            hash_key: HashKey::ClientIp,
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::ZERO,
            retries: 2,
            retry_budget_percent: 20,
            retry_budget_min_per_sec: 10,
            upstream_h2: false,
            h2c: true,
            forwarded_headers: true,
            pool_size: 128,
            tls_cert: None,
            tls_key: None,
        }
    }
}
