//! The TCP proxy: a listener accepts, the pool picks, a connect that fails
//! or times out retries on another backend, and the pump moves the bytes.
//!
//! One [`Listener`] per listening address. Its settings and pool can be
//! swapped while it runs (reload): new connections see the new ones, open
//! connections keep what they started with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::Endpoint;
use crate::hash::key_of_ip;
use crate::policy::humantime_serde_compat as hts;
use crate::pool::Pool;

pub mod pump;

/// Per-listener proxy settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// A connect to a backend that takes longer fails (and is retried).
    #[serde(with = "hts")]
    pub connect_timeout: Duration,
    /// Backends tried per client connection before giving up.
    pub connect_attempts: u32,
    /// Close a connection after this long without a byte either way
    /// (`0s` = never, the default).
    #[serde(with = "hts")]
    pub idle_timeout: Duration,
    /// TCP keepalive idle time on both sides (`0s` = off).
    #[serde(with = "hts")]
    pub keepalive: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeout: Duration::from_secs(2),
            connect_attempts: 3,
            idle_timeout: Duration::ZERO,
            keepalive: Duration::from_secs(60),
        }
    }
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicI64,
    /// Connections closed because no backend could be reached.
    pub no_backend: AtomicU64,
}

/// A running listener.
#[derive(Debug)]
pub struct Listener {
    name: String,
    addr: SocketAddr,
    pool: ArcSwap<Pool>,
    settings: ArcSwap<ProxySettings>,
    stats: ListenerStats,
    stop: CancellationToken,
}

impl Listener {
    /// A listener named `name` on `addr` (already bound) over `pool`.
    pub fn new(
        name: String,
        addr: SocketAddr,
        pool: Arc<Pool>,
        settings: ProxySettings,
    ) -> Arc<Self> {
        Arc::new(Listener {
            name,
            addr,
            pool: ArcSwap::new(pool),
            settings: ArcSwap::from_pointee(settings),
            stats: ListenerStats::default(),
            stop: CancellationToken::new(),
        })
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The pool in force.
    pub fn pool(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    /// The counters.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<ProxySettings> {
        self.settings.load_full()
    }

    /// Replaces the settings for connections accepted from now on.
    pub fn set_settings(&self, s: ProxySettings) {
        self.settings.store(Arc::new(s));
    }

    /// Stops accepting; open connections carry on.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Accepts until stopped; each connection runs on `tracker`.
    pub async fn serve(self: Arc<Self>, tcp: TcpListener, tracker: TaskTracker) {
        loop {
            let accepted = tokio::select! {
                () = self.stop.cancelled() => return,
                r = tcp.accept() => r,
            };
            match accepted {
                Ok((client, peer)) => {
                    self.stats.accepted.fetch_add(1, Relaxed);
                    let me = Arc::clone(&self);
                    tracker.spawn(async move { me.handle(client, peer).await });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, do not spin.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(&self, client: TcpStream, peer: SocketAddr) {
        self.stats.active.fetch_add(1, Relaxed);
        let _active = Decrement(&self.stats.active);
        let settings = self.settings.load_full();
        let pool = self.pool.load_full();
        let keepalive = (!settings.keepalive.is_zero()).then_some(settings.keepalive);
        set_options(&client, keepalive);
        let key = key_of_ip(peer.ip());
        let mut tried: Vec<SocketAddr> = Vec::new();
        let (backend, guard) = loop {
            if tried.len() >= settings.connect_attempts.max(1) as usize {
                self.give_up(peer, &tried);
                return;
            }
            let Some(ep) = pool.pick(key, &tried) else {
                self.give_up(peer, &tried);
                return;
            };
            let guard = ep.open();
            let started = Instant::now();
            match timeout(settings.connect_timeout, connect(&ep, keepalive)).await {
                Ok(Ok(s)) => {
                    pool.report_success(&ep, started.elapsed());
                    break (s, guard);
                }
                Ok(Err(e)) => {
                    tracing::debug!(backend = %ep.addr(), error = %e, "connect failed");
                    pool.report_failure(&ep);
                }
                Err(_) => {
                    tracing::debug!(backend = %ep.addr(), "connect timed out");
                    pool.report_failure(&ep);
                }
            }
            tried.push(ep.addr());
        };
        let idle = (!settings.idle_timeout.is_zero()).then_some(settings.idle_timeout);
        if let Err(e) = pump::pump(&client, &backend, guard.endpoint(), idle).await {
            tracing::debug!(listener = %self.name, %peer, error = %e, "connection ended with an error");
        }
    }

    fn give_up(&self, peer: SocketAddr, tried: &[SocketAddr]) {
        self.stats.no_backend.fetch_add(1, Relaxed);
        tracing::warn!(listener = %self.name, %peer, ?tried, "no backend reachable; closing client connection");
    }
}

struct Decrement<'a>(&'a AtomicI64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn set_options(s: &TcpStream, keepalive: Option<Duration>) {
    let _ = s.set_nodelay(true);
    if let Some(idle) = keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
    }
}

async fn connect(ep: &Endpoint, keepalive: Option<Duration>) -> std::io::Result<TcpStream> {
    let sock = match ep.addr() {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let s = sock.connect(ep.addr()).await?;
    set_options(&s, keepalive);
    Ok(s)
}
