//! A listener's HTTP side: the pingora app built over our [`Balancer`], the
//! settings it runs with, and the hand-off of accepted connections to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::ServerConf;
use pingora_proxy::{http_proxy, HttpProxy};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::balancer::Balancer;
use super::budget::RetryBudget;
use super::h1::idle::IdlePool;
use super::h1::request::Peer;
use super::h1::Served;
use super::io::Buffered;
use super::stats::ListenerHttpStats;
use super::HttpSettings;
use pingora_core::listeners::tls::Acceptor;

fn load_tls(s: &HttpSettings) -> Option<Arc<Acceptor>> {
    match super::tls::from_paths(s.tls_cert.as_deref(), s.tls_key.as_deref()) {
        Ok(a) => a.map(Arc::new),
        Err(e) => {
            tracing::error!(error = %e, "TLS off");
            None
        }
    }
}
use crate::proxy::Listener;

/// The HTTP state of one listener.
pub struct HttpListener {
    settings: ArcSwap<HttpSettings>,
    tls: ArcSwapOption<Acceptor>,
    budget: ArcSwap<RetryBudget>,
    app: ArcSwapOption<HttpProxy<Balancer>>,
    shutdown: watch::Sender<bool>,
    /// Whether the sweeper of idle upstream connections runs.
    sweeping: AtomicBool,
    /// Idle upstream connections of the HTTP/1.1 fast path.
    pub idle: IdlePool,
    /// Counters.
    pub stats: ListenerHttpStats,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HttpListener {
    /// HTTP state with `settings`; [`HttpListener::attach`] builds the app.
    /// A certificate that cannot be loaded leaves the listener without TLS
    /// (configs are validated before they get here).
    pub fn new(settings: HttpSettings) -> Self {
        HttpListener {
            tls: ArcSwapOption::from(load_tls(&settings)),
            budget: ArcSwap::from_pointee(RetryBudget::new(
                settings.retry_budget_percent,
                settings.retry_budget_min_per_sec,
            )),
            settings: ArcSwap::from_pointee(settings),
            app: ArcSwapOption::empty(),
            shutdown: watch::channel(false).0,
            sweeping: AtomicBool::new(false),
            idle: IdlePool::default(),
            stats: ListenerHttpStats::default(),
        }
    }

    /// Builds the pingora app for `listener`.
    pub fn attach(self: &Arc<Self>, listener: Weak<Listener>) {
        let s = self.settings.load();
        let conf = ServerConf {
            upstream_keepalive_pool_size: s.pool_size,
            threads: 1,
            ..ServerConf::default()
        };
        let mut app = http_proxy(
            &Arc::new(conf),
            Balancer::new(listener, Arc::downgrade(self)),
        );
        let mut opts = HttpServerOptions::default();
        opts.h2c = s.h2c;
        app.server_options = Some(opts);
        self.app.store(Some(Arc::new(app)));
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<HttpSettings> {
        self.settings.load_full()
    }

    /// The retry budget.
    pub fn budget(&self) -> Arc<RetryBudget> {
        self.budget.load_full()
    }

    /// Applies new settings to requests from now on. A change of pool size
    /// or h2c rebuilds the app (its idle upstream connections are dropped).
    pub fn set_settings(self: &Arc<Self>, s: HttpSettings, listener: Weak<Listener>) {
        self.tls.store(load_tls(&s));
        let old = self.settings.swap(Arc::new(s.clone()));
        if (old.retry_budget_percent, old.retry_budget_min_per_sec)
            != (s.retry_budget_percent, s.retry_budget_min_per_sec)
        {
            self.budget.store(Arc::new(RetryBudget::new(
                s.retry_budget_percent,
                s.retry_budget_min_per_sec,
            )));
        }
        if old.pool_size != s.pool_size || old.h2c != s.h2c {
            self.attach(listener);
        }
    }

    /// Tells keep-alive connections to close after their current request.
    pub fn shut_down(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Serves one client connection; `client` is its real address (from a
    /// PROXY header when the listener accepts one). Plain HTTP/1.1 goes
    /// through the fast path ([`super::h1`]) until a request needs pingora;
    /// TLS, and listeners speaking HTTP/2 to backends, go to pingora.
    pub async fn serve(self: &Arc<Self>, listener: &Listener, tcp: TcpStream, client: SocketAddr) {
        let local = tcp.local_addr().ok();
        let mut shutdown = self.shutdown.subscribe();
        let tls = self.tls.load_full();
        let (tcp, prefix) = if tls.is_none() && !self.settings.load().upstream_h2 {
            self.start_sweeper();
            let peer = Peer { client, local };
            match super::h1::serve(self, listener, tcp, peer, &mut shutdown).await {
                Served::Done => return,
                Served::HandOff(tcp, prefix) => {
                    self.stats.handoffs.fetch_add(1, Relaxed);
                    (tcp, prefix)
                }
            }
        } else {
            (tcp, Vec::new())
        };
        let Some(app) = self.app.load_full() else {
            return;
        };
        let mut stream = Stream::from(tcp);
        let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&stream));
        let _ = digest.peer_addr.set(Some(client.into()));
        let _ = digest.local_addr.set(local.map(Into::into));
        stream.set_socket_digest(digest);
        // Buffered: see `super::io` (one write per small response).
        let first: pingora_core::protocols::Stream = match tls {
            None => Box::new(Buffered::with_prefix(stream, prefix)),
            Some(acceptor) => match acceptor.tls_handshake(stream).await {
                Ok(tls) => Box::new(Buffered::new(tls)),
                Err(e) => {
                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                    return;
                }
            },
        };
        let mut next = app.process_new(first, &shutdown).await;
        while let Some(s) = next {
            next = app.process_new(s, &shutdown).await;
        }
    }

    /// Starts, once, the task that closes idle upstream connections older
    /// than [`super::h1::idle::MAX_IDLE`]; it ends with the listener.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                me.idle.sweep(tokio::time::Instant::now());
                if *me.shutdown.borrow() {
                    me.idle
                        .sweep(tokio::time::Instant::now() + Duration::from_secs(3600));
                    return;
                }
            }
        });
    }
}
