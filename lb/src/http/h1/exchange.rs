//! One request's trip through the fast path: pick a backend, send the
//! request on a pooled or new connection, read the response head, retry
//! within the same limits as pingora's path (`retries`, the retry budget,
//! the total timeout; idempotent requests only once anything may have
//! reached a backend), then relay the body to the client and give the
//! connection back to the pool.
//!
//! A pooled connection is reused only while it looks open: nothing arrived
//! on it since its last response (no stray bytes, which the next client
//! would take for its answer, and no end of stream). tokio knows this from
//! the socket's readiness without a system call. A backend may still close
//! it at the moment it is reused: the first write or read then fails with
//! nothing received, and an idempotent request is sent once more on a new
//! connection, not counted as a retry nor against the backend.
//!
//! With `send_proxy_v2` an upstream connection speaks for one client
//! connection (its PROXY header names that client), so it is kept with the
//! client connection ([`Buffers`]), one per backend, and closed with it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::chunked::Chunked;
use super::idle::Key;
use super::request::{Peer, Request};
use super::response::{self, Framing, Response};
use crate::endpoint::Endpoint;
use crate::http::serve::HttpListener;
use crate::http::HttpSettings;
use crate::proxy::{Listener, ProxySettings};
use crate::proxy_protocol::encode_v2;

/// Bytes read from a backend per read.
const READ_CHUNK: usize = 16 * 1024;

/// Whether the client connection carries another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Close it.
    Close,
}

/// Upstream connections one client connection keeps for itself, at most.
const MAX_PRIVATE: usize = 8;

/// What a client connection keeps from request to request.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Bytes from the backend.
    pub up: Vec<u8>,
    /// A response head written again, or an error response.
    pub head: Vec<u8>,
    /// Idle upstream connections that carry this client's PROXY v2 header,
    /// by backend (closed with the client connection).
    private: Vec<(Key, TcpStream)>,
}

/// Why an attempt failed before a response head arrived.
#[derive(Debug)]
enum Failure {
    /// No connection could be made.
    Connect,
    /// A pooled connection turned out closed; nothing reached a backend.
    Stale,
    /// The backend took too long.
    Timeout,
    /// It failed otherwise (reset, early close, a malformed response).
    Broken,
    /// It failed after an interim (1xx) response went to the client: the
    /// response has started, so it is not sent again.
    AfterInterim,
}

impl Failure {
    /// What the client is told when this was the last attempt.
    fn answer(&self) -> (u16, &'static str) {
        match self {
            Failure::Timeout => (504, "backend timed out"),
            _ => (502, "backend failed and no retry is left"),
        }
    }

    /// The same failure once bytes of a response were received: a stale
    /// connection is then simply broken.
    fn after_bytes(self) -> Failure {
        match self {
            Failure::Stale => Failure::Broken,
            f => f,
        }
    }
}

/// What one request needs to know about where it is.
pub struct Trip<'a> {
    /// The listener's HTTP side (stats, budget, idle connections).
    pub http: &'a HttpListener,
    /// The listener (pool, sockets).
    pub listener: &'a Listener,
    /// HTTP settings in force for this connection.
    pub settings: &'a HttpSettings,
    /// Proxy settings in force for this connection.
    pub proxy: &'a ProxySettings,
    /// The client.
    pub peer: Peer,
}

/// Awaits `f` for at most `limit` (none: no limit).
async fn within<T>(
    limit: Option<Duration>,
    f: impl Future<Output = io::Result<T>>,
) -> Result<io::Result<T>, ()> {
    match limit {
        None => Ok(f.await),
        Some(d) => tokio::time::timeout(d, f).await.map_err(|_| ()),
    }
}

fn min_limit(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// True when a pooled connection has nothing waiting and is not at its end.
fn looks_open(tcp: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Trip<'_> {
    fn deadline(&self, started: Instant) -> Option<Instant> {
        let t = self.settings.total_timeout;
        (!t.is_zero()).then(|| started + t)
    }

    fn read_limit(&self, deadline: Option<Instant>) -> Option<Duration> {
        let r = self.settings.read_timeout;
        min_limit((!r.is_zero()).then_some(r), left(deadline))
    }

    /// Carries `req` (its upstream bytes in `out`) and relays the response.
    pub async fn forward(
        &self,
        client: &mut TcpStream,
        req: &Request,
        out: &[u8],
        bufs: &mut Buffers,
        started: Instant,
    ) -> After {
        let pool = self.listener.pool();
        let deadline = self.deadline(started);
        let budget = self.http.budget();
        budget.on_request(started);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut fresh = false;
        let mut last: Option<Failure> = None;
        loop {
            let Some(ep) = pool.pick(req.key, &tried) else {
                // Every backend left was tried: say why the last one failed,
                // unless none could be reached at all.
                let (status, reason) = match &last {
                    None | Some(Failure::Connect) => (503, "no healthy backend"),
                    Some(f) => f.answer(),
                };
                return self.respond(client, status, reason, req, started).await;
            };
            let _active = ep.open();
            let picked = Instant::now();
            let key: Key = ep.addr();
            let failure = match self
                .attempt(&ep, &key, fresh, client, out, bufs, req, deadline)
                .await
            {
                Ok((up, resp)) => {
                    return self
                        .relay(client, up, resp, &ep, &key, picked, req, bufs, started)
                        .await
                }
                Err(f) => f,
            };
            match failure {
                Failure::Stale if req.idempotent => {
                    fresh = true;
                    continue;
                }
                Failure::Connect => pool.report_failure(&ep),
                _ => {
                    pool.report_error(&ep);
                    if !req.idempotent || matches!(failure, Failure::AfterInterim) {
                        let (status, reason) = match failure {
                            Failure::Timeout => (504, "backend timed out"),
                            _ => (502, "backend failed"),
                        };
                        return self.respond(client, status, reason, req, started).await;
                    }
                }
            }
            tried.push(ep.addr());
            fresh = false;
            let now = Instant::now();
            let over_time = deadline.is_some_and(|d| now >= d);
            if over_time || tried.len() > self.settings.retries as usize || !budget.try_retry(now) {
                self.http.stats.retries_denied.fetch_add(1, Relaxed);
                let (status, reason) = failure.answer();
                return self.respond(client, status, reason, req, started).await;
            }
            last = Some(failure);
            self.http.stats.retries.fetch_add(1, Relaxed);
        }
    }

    /// One attempt on `ep`: a connection, the request, the response head
    /// (1xx heads are passed to the client on the way).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        ep: &Arc<Endpoint>,
        key: &Key,
        fresh: bool,
        client: &mut TcpStream,
        out: &[u8],
        bufs: &mut Buffers,
        req: &Request,
        deadline: Option<Instant>,
    ) -> Result<(TcpStream, Response), Failure> {
        let stats = &self.http.stats;
        let pooled = if fresh {
            None
        } else {
            self.take_pooled(key, bufs)
        };
        let reused = pooled.is_some();
        let mut up = match pooled {
            Some(tcp) => tcp,
            None => self.connect(ep, deadline).await?,
        };
        let counter = if reused {
            &stats.upstream_reused
        } else {
            &stats.upstream_new
        };
        counter.fetch_add(1, Relaxed);
        let mut interim = false;
        let lost = |e: Option<io::Error>, interim: bool| match e {
            _ if interim => Failure::AfterInterim,
            None => Failure::Timeout,
            Some(_) if reused => Failure::Stale,
            Some(_) => Failure::Broken,
        };
        match within(left(deadline), up.write_all(out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(lost(Some(e), false)),
            Err(()) => return Err(lost(None, false)),
        }
        bufs.up.clear();
        let mut got_any = false;
        loop {
            if got_any {
                match response::parse(&bufs.up, req.head) {
                    response::Parsed::Partial => {}
                    response::Parsed::Bad(why) => {
                        tracing::debug!(backend = %ep.addr(), reason = why, "bad response");
                        return Err(
                            lost(Some(io::ErrorKind::InvalidData.into()), interim).after_bytes()
                        );
                    }
                    response::Parsed::Ready(r) if r.status < 200 => {
                        interim = true;
                        if send(client, &bufs.up[..r.head_len]).await.is_err() {
                            return Err(Failure::AfterInterim);
                        }
                        bufs.up.drain(..r.head_len);
                        continue;
                    }
                    response::Parsed::Ready(r) => return Ok((up, r)),
                }
            }
            bufs.up.reserve(READ_CHUNK);
            match within(self.read_limit(deadline), up.read_buf(&mut bufs.up)).await {
                Ok(Ok(0)) if !got_any => {
                    return Err(lost(Some(io::ErrorKind::UnexpectedEof.into()), interim))
                }
                Ok(Ok(0)) => {
                    return Err(
                        lost(Some(io::ErrorKind::UnexpectedEof.into()), interim).after_bytes()
                    )
                }
                Ok(Ok(_)) => got_any = true,
                Ok(Err(e)) if !got_any => return Err(lost(Some(e), interim)),
                Ok(Err(e)) => return Err(lost(Some(e), interim).after_bytes()),
                Err(()) => return Err(lost(None, interim)),
            }
        }
    }

    /// An idle connection to backend `key` that still looks open: this
    /// client connection's own with PROXY v2, else the listener's.
    fn take_pooled(&self, key: &Key, bufs: &mut Buffers) -> Option<TcpStream> {
        if self.proxy.send_proxy_v2 {
            let at = bufs.private.iter().position(|(k, _)| k == key)?;
            let (_, tcp) = bufs.private.swap_remove(at);
            return looks_open(&tcp).then_some(tcp);
        }
        let now = Instant::now();
        std::iter::from_fn(|| self.http.idle.take(key, now))
            .map(|c| c.tcp)
            .find(looks_open)
    }

    /// Keeps `tcp`, which can carry another request to backend `key`.
    fn keep(&self, key: Key, tcp: TcpStream, bufs: &mut Buffers) {
        if self.proxy.send_proxy_v2 {
            if bufs.private.len() >= MAX_PRIVATE {
                bufs.private.remove(0);
            }
            bufs.private.push((key, tcp));
        } else {
            let max = self.settings.pool_size;
            self.http.idle.put(key, tcp, Instant::now(), max);
        }
    }

    /// A new connection to `ep` (with the PROXY v2 header when configured).
    async fn connect(
        &self,
        ep: &Endpoint,
        deadline: Option<Instant>,
    ) -> Result<TcpStream, Failure> {
        let limit = min_limit(Some(self.proxy.connect_timeout), left(deadline));
        let hello = self.proxy.send_proxy_v2.then(|| {
            let destination = self.peer.local.unwrap_or(self.listener.addr());
            encode_v2(self.peer.client, destination)
        });
        let keepalive = crate::proxy::keepalive_of(self.proxy);
        let sockets = self.listener.sockets().as_ref();
        match within(
            limit,
            crate::proxy::connect(sockets, ep, keepalive, hello.as_deref()),
        )
        .await
        {
            Ok(Ok(tcp)) => Ok(tcp),
            Ok(Err(e)) => {
                tracing::debug!(backend = %ep.addr(), error = %e, "connect failed");
                Err(Failure::Connect)
            }
            Err(()) => {
                tracing::debug!(backend = %ep.addr(), "connect timed out");
                Err(Failure::Connect)
            }
        }
    }

    /// Sends the response to the client: its head, then its body as it
    /// comes; the connection goes back to the pool when it can carry more.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        client: &mut TcpStream,
        mut up: TcpStream,
        resp: Response,
        ep: &Arc<Endpoint>,
        key: &Key,
        picked: Instant,
        req: &Request,
        bufs: &mut Buffers,
        started: Instant,
    ) -> After {
        let status = resp.status;
        let rtt = picked.elapsed();
        ep.http.responses.count(status);
        ep.http.latency.observe(rtt);
        let pool = self.listener.pool();
        if status >= 500 {
            pool.report_error(ep);
        } else {
            pool.report_success(ep, rtt);
        }
        let close = req.close || resp.framing == Framing::UntilClose;
        let deadline = self.deadline(started);
        let done = self
            .relay_body(client, &mut up, &resp, close, bufs, deadline)
            .await;
        self.count(status, started);
        match done {
            Ok(reusable) => {
                if reusable {
                    self.keep(*key, up, bufs);
                }
                if close {
                    After::Close
                } else {
                    After::KeepAlive
                }
            }
            Err(e) => {
                tracing::debug!(backend = %ep.addr(), error = %e, "response cut short");
                After::Close
            }
        }
    }

    /// Relays head and body; `Ok(true)` when the backend connection can
    /// carry another request.
    async fn relay_body(
        &self,
        client: &mut TcpStream,
        up: &mut TcpStream,
        resp: &Response,
        close: bool,
        bufs: &mut Buffers,
        deadline: Option<Instant>,
    ) -> io::Result<bool> {
        let head_len = resp.head_len;
        let mut chunked = Chunked::default();
        let mut remaining = match resp.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        // How much of `data` is body; whether the body is over; whether
        // bytes followed it (then the connection is not reused).
        let mut take = |data: &[u8]| -> io::Result<(usize, bool, bool)> {
            Ok(match resp.framing {
                Framing::Empty => (0, true, !data.is_empty()),
                Framing::Length(_) => {
                    let n = remaining.min(data.len() as u64);
                    remaining -= n;
                    (n as usize, remaining == 0, data.len() as u64 > n)
                }
                Framing::Chunked => match chunked.feed(data) {
                    Ok(Some(n)) => (n, true, data.len() > n),
                    Ok(None) => (data.len(), false, false),
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.0)),
                },
                Framing::UntilClose => (data.len(), false, false),
            })
        };
        let (n, mut done, mut extra) = take(&bufs.up[head_len..])?;
        if resp.verbatim && !close {
            send(client, &bufs.up[..head_len + n]).await?;
        } else {
            response::rewrite(&bufs.up[..head_len], close, &mut bufs.head);
            bufs.head
                .extend_from_slice(&bufs.up[head_len..head_len + n]);
            send(client, &bufs.head).await?;
        }
        while !done {
            bufs.up.clear();
            bufs.up.reserve(READ_CHUNK);
            let limit = self.read_limit(deadline);
            let got = match within(limit, up.read_buf(&mut bufs.up)).await {
                Ok(r) => r?,
                Err(()) => return Err(io::ErrorKind::TimedOut.into()),
            };
            if got == 0 {
                if resp.framing == Framing::UntilClose {
                    return Ok(false);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (n, d, x) = take(&bufs.up)?;
            (done, extra) = (d, x);
            send(client, &bufs.up[..n]).await?;
        }
        Ok(resp.reusable && !extra)
    }

    fn count(&self, status: u16, started: Instant) {
        let stats = &self.http.stats;
        stats.responses.count(status);
        stats.latency.observe(started.elapsed());
    }

    /// Answers with an error of this proxy's own.
    async fn respond(
        &self,
        client: &mut TcpStream,
        status: u16,
        reason: &str,
        req: &Request,
        started: Instant,
    ) -> After {
        self.count(status, started);
        let written = write_error(client, status, reason, req.close).await;
        if written.is_err() || req.close {
            After::Close
        } else {
            After::KeepAlive
        }
    }
}

/// Writes `bytes` to the client, failing with `TimedOut` when it has not
/// taken them within [`WRITE_TIMEOUT`](super::WRITE_TIMEOUT).
async fn send(client: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    match tokio::time::timeout(super::WRITE_TIMEOUT, client.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// What is left until `deadline`, if there is one.
fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    })
}

/// Writes a short plain-text error response; `close` adds
/// `Connection: close`.
pub async fn write_error(
    client: &mut TcpStream,
    status: u16,
    reason: &str,
    close: bool,
) -> io::Result<()> {
    let text = match status {
        400 => "Bad Request",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{reason}\n");
    let conn = if close { "connection: close\r\n" } else { "" };
    let msg = format!(
        "HTTP/1.1 {status} {text}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{conn}\r\n{body}",
        body.len()
    );
    send(client, msg.as_bytes()).await
}
