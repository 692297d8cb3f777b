//! The proxy listener: it accepts, reads a PROXY header when told to, and
//! either hands the connection to the HTTP side ([`crate::http`]) or proxies
//! TCP: the pool picks, a connect that fails or times out retries on another
//! backend, and the pump moves the bytes.
//!
//! One [`Listener`] per listening address. Its settings and pool can be
//! swapped while it runs (reload): new connections see the new ones, open
//! connections keep what they started with. While it accepts, it can lend a
//! duplicate of its listening socket ([`Listener::dup_socket`]) to another
//! process taking over (a graceful restart).

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::Endpoint;
use crate::hash::key_of_ip;
use crate::http::serve::HttpListener;
use crate::http::HttpSettings;
use crate::policy::humantime_serde_compat as hts;
use crate::pool::Pool;
use crate::proxy_protocol;
use crate::sockets::Sockets;

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
    /// Expect a PROXY v1/v2 header from a front balancer on every
    /// connection and take the client's address from it.
    pub accept_proxy: bool,
    /// Send a PROXY v2 header with the client's address to backends.
    pub send_proxy_v2: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeout: Duration::from_secs(2),
            connect_attempts: 3,
            idle_timeout: Duration::ZERO,
            keepalive: Duration::from_secs(60),
            accept_proxy: false,
            send_proxy_v2: false,
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
    /// Connections closed for a missing or malformed PROXY header.
    pub bad_proxy_header: AtomicU64,
}

/// How long a client may take to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running listener.
#[derive(Debug)]
pub struct Listener {
    name: String,
    addr: SocketAddr,
    pool: ArcSwap<Pool>,
    settings: ArcSwap<ProxySettings>,
    stats: ListenerStats,
    stop: CancellationToken,
    http: Option<Arc<HttpListener>>,
    sockets: Arc<dyn Sockets>,
    /// The listening socket, owned by the accept loop (so it closes when
    /// the loop ends), once [`Listener::serve`] was called.
    socket: OnceLock<Weak<TcpListener>>,
}

impl Listener {
    /// A listener named `name` on `addr` (already bound) over `pool`, in
    /// TCP mode, or in HTTP mode when `http` settings are given.
    pub fn new(
        name: String,
        addr: SocketAddr,
        pool: Arc<Pool>,
        settings: ProxySettings,
        http: Option<HttpSettings>,
        sockets: Arc<dyn Sockets>,
    ) -> Arc<Self> {
        let listener = Arc::new(Listener {
            name,
            addr,
            sockets,
            pool: ArcSwap::new(pool),
            settings: ArcSwap::from_pointee(settings),
            stats: ListenerStats::default(),
            stop: CancellationToken::new(),
            http: http.map(|h| Arc::new(HttpListener::new(h))),
            socket: OnceLock::new(),
        });
        if let Some(h) = &listener.http {
            h.attach(Arc::downgrade(&listener));
        }
        listener
    }

    /// Where this listener's outbound sockets come from.
    pub fn sockets(&self) -> &Arc<dyn Sockets> {
        &self.sockets
    }

    /// The HTTP side, for a listener in HTTP mode.
    pub fn http(&self) -> Option<&Arc<HttpListener>> {
        self.http.as_ref()
    }

    /// Replaces the HTTP settings (HTTP mode) for requests from now on.
    pub fn set_http_settings(self: &Arc<Self>, s: HttpSettings) {
        if let Some(h) = &self.http {
            h.set_settings(s, Arc::downgrade(self));
        }
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

    /// Stops accepting; open connections carry on (HTTP keep-alive
    /// connections close after their current request).
    pub fn stop(&self) {
        self.stop.cancel();
        if let Some(h) = &self.http {
            h.shut_down();
        }
    }

    /// A duplicate of the listening socket while this listener accepts
    /// (`None` before [`Listener::serve`] and once stopped), for another
    /// process to accept on: the kernel gives each new connection to one of
    /// the two, and the socket stays open as long as either holds it, so
    /// this listener can then stop and drain without a refused connection.
    pub fn dup_socket(&self) -> Option<std::io::Result<OwnedFd>> {
        if self.stop.is_cancelled() {
            return None;
        }
        let tcp = self.socket.get()?.upgrade()?;
        let dup = tcp.as_fd().try_clone_to_owned();
        Some(dup)
    }

    /// Accepts on `tcp` until stopped; each connection runs on `tracker`.
    /// The socket is this listener's from the call on (see
    /// [`Listener::dup_socket`]); it closes when the returned future ends.
    pub fn serve(
        self: Arc<Self>,
        tcp: TcpListener,
        tracker: TaskTracker,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tcp = Arc::new(tcp);
        let _ = self.socket.set(Arc::downgrade(&tcp));
        async move { self.accept_loop(&tcp, tracker).await }
    }

    async fn accept_loop(self: Arc<Self>, tcp: &TcpListener, tracker: TaskTracker) {
        // The keepalive that every connection accepted from now on already
        // carries, inherited from the listening socket (see `preset`).
        let mut inherited: Option<Option<Duration>> = None;
        loop {
            let keepalive = keepalive_of(&self.settings.load());
            if inherited != Some(keepalive) {
                inherited = self.preset(tcp, keepalive, &tracker);
            }
            let accepted = tokio::select! {
                () = self.stop.cancelled() => return,
                r = tcp.accept() => r,
            };
            match accepted {
                Ok((client, peer)) => {
                    self.stats.accepted.fetch_add(1, Relaxed);
                    let me = Arc::clone(&self);
                    tracker.spawn(async move { me.handle(client, peer, inherited).await });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, do not spin.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Sets TCP_NODELAY and `keepalive` on the listening socket, so that
    /// the sockets it accepts inherit them (as Linux does) and need no
    /// `setsockopt` calls of their own. Connections already queued were made
    /// before: they are accepted here and get their options one by one.
    /// Returns the keepalive that connections accepted from now on carry, or
    /// `None` where they inherit nothing.
    fn preset(
        self: &Arc<Self>,
        tcp: &TcpListener,
        keepalive: Option<Duration>,
        tracker: &TaskTracker,
    ) -> Option<Option<Duration>> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let set = set_socket_options(socket2::SockRef::from(tcp), keepalive);
        loop {
            let (client, peer) = match socket2::SockRef::from(tcp).accept() {
                Ok((s, a)) => (std::net::TcpStream::from(s), a.as_socket()),
                // Empty queue (or an error the accept loop will meet again).
                Err(_) => break,
            };
            let client = client
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(client));
            if let (Ok(client), Some(peer)) = (client, peer) {
                self.stats.accepted.fetch_add(1, Relaxed);
                let me = Arc::clone(self);
                tracker.spawn(async move { me.handle(client, peer, None).await });
            }
        }
        set.ok().map(|()| keepalive)
    }

    /// Proxies one accepted connection. `inherited`: the keepalive the
    /// socket already carries from the listening socket, with TCP_NODELAY.
    async fn handle(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        inherited: Option<Option<Duration>>,
    ) {
        self.stats.active.fetch_add(1, Relaxed);
        let _active = Decrement(&self.stats.active);
        let settings = self.settings.load_full();
        let keepalive = keepalive_of(&settings);
        if inherited != Some(keepalive) {
            set_options(&client, keepalive);
        }
        let mut source = peer;
        let mut destination = self.addr;
        if settings.accept_proxy {
            match proxy_protocol::read_header(&mut client, PROXY_HEADER_TIMEOUT).await {
                Ok(h) => {
                    source = h.source.unwrap_or(peer);
                    destination = h.destination.unwrap_or(self.addr);
                }
                Err(e) => {
                    self.stats.bad_proxy_header.fetch_add(1, Relaxed);
                    tracing::debug!(listener = %self.name, %peer, error = %e, "closing connection");
                    return;
                }
            }
        }
        if let Some(http) = &self.http {
            http.serve(self, client, source).await;
            return;
        }
        let pool = self.pool.load_full();
        let key = key_of_ip(source.ip());
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
            let hello = settings
                .send_proxy_v2
                .then(|| proxy_protocol::encode_v2(source, destination));
            match timeout(
                settings.connect_timeout,
                connect(self.sockets.as_ref(), &ep, keepalive, hello.as_deref()),
            )
            .await
            {
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
        if let Err(e) = pump::pump(client, backend, guard.endpoint(), idle).await {
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

pub(crate) fn keepalive_of(settings: &ProxySettings) -> Option<Duration> {
    (!settings.keepalive.is_zero()).then_some(settings.keepalive)
}

fn tcp_keepalive(idle: Duration) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(6)
}

/// TCP_NODELAY, and TCP keepalive after `keepalive` idle (off when `None`).
fn set_socket_options(s: socket2::SockRef<'_>, keepalive: Option<Duration>) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    match keepalive {
        Some(idle) => s.set_tcp_keepalive(&tcp_keepalive(idle)),
        None => s.set_keepalive(false),
    }
}

fn set_options(s: &TcpStream, keepalive: Option<Duration>) {
    let _ = set_socket_options(socket2::SockRef::from(s), keepalive);
}

pub(crate) async fn connect(
    sockets: &dyn Sockets,
    ep: &Endpoint,
    keepalive: Option<Duration>,
    hello: Option<&[u8]>,
) -> std::io::Result<TcpStream> {
    let sock = sockets.outbound(ep.addr())?;
    // Before the connect, so the options hold from the first segment. A new
    // socket has keepalive off already.
    let opts = socket2::SockRef::from(&sock);
    let _ = opts.set_nodelay(true);
    if let Some(idle) = keepalive {
        let _ = opts.set_tcp_keepalive(&tcp_keepalive(idle));
    }
    let mut s = sock.connect(ep.addr()).await?;
    if let Some(h) = hello {
        tokio::io::AsyncWriteExt::write_all(&mut s, h).await?;
    }
    Ok(s)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// What `Listener::preset` relies on: Linux copies TCP_NODELAY and the
    /// keepalive settings of a listening socket to the sockets it accepts.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listening_options() {
        for keepalive in [Some(Duration::from_secs(42)), None] {
            let tcp = crate::runtime::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            set_socket_options(socket2::SockRef::from(&tcp), keepalive).unwrap();
            let (c, a) = tokio::join!(TcpStream::connect(tcp.local_addr().unwrap()), tcp.accept());
            let (_c, (s, _)) = (c.unwrap(), a.unwrap());
            let s = socket2::SockRef::from(&s);
            assert!(s.nodelay().unwrap());
            assert_eq!(s.keepalive().unwrap(), keepalive.is_some());
            if let Some(idle) = keepalive {
                assert_eq!(s.keepalive_time().unwrap(), idle);
                assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(10));
                assert_eq!(s.keepalive_retries().unwrap(), 6);
            }
        }
    }
}
