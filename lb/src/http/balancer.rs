//! The `ProxyHttp` implementation: pingora calls it at each step of a
//! request; it picks through the listener's pool, retries within the budget,
//! reports health, adds forwarding headers and counts.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use http::HeaderValue;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tokio::time::Instant;

use super::forwarded::{forwarded_for, joined, x_forwarded_for};
use super::serve::HttpListener;
use super::upstream::UpstreamConnect;
use crate::endpoint::{ConnGuard, Endpoint};
use crate::hash::hash_addr;
use crate::proxy::Listener;

/// Balances one listener's requests.
pub struct Balancer {
    listener: Weak<Listener>,
    http: Weak<HttpListener>,
}

impl Balancer {
    /// A balancer for `listener`'s pool and settings.
    pub fn new(listener: Weak<Listener>, http: Weak<HttpListener>) -> Self {
        Balancer { listener, http }
    }

    fn http(&self) -> Result<Arc<HttpListener>> {
        self.http
            .upgrade()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "listener stopped"))
    }

    fn listener(&self) -> Result<Arc<Listener>> {
        self.listener
            .upgrade()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "listener stopped"))
    }
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    picked_at: Instant,
    tried: Vec<SocketAddr>,
    current: Option<ConnGuard>,
    status: Option<u16>,
    /// How the last attempt failed, if one did: the client's answer when no
    /// retry is left (503 when no backend could be reached, 504 after a
    /// timeout, else 502), as on the fast path.
    failed: Option<Failed>,
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// No connection could be made.
    Connect,
    /// The backend took too long.
    Timeout,
    /// It failed otherwise (a reset, an early close).
    Other,
}

impl Ctx {
    fn endpoint(&self) -> Option<&Arc<Endpoint>> {
        self.current.as_ref().map(ConnGuard::endpoint)
    }
}

fn client_of(session: &Session) -> Option<SocketAddr> {
    session.client_addr().and_then(|a| a.as_inet()).copied()
}

fn server_of(session: &Session) -> Option<SocketAddr> {
    session.server_addr().and_then(|a| a.as_inet()).copied()
}

#[async_trait]
impl ProxyHttp for Balancer {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let now = Instant::now();
        Ctx {
            started: now,
            picked_at: now,
            tried: Vec::new(),
            current: None,
            status: None,
            failed: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        session.set_write_timeout(Some(super::h1::WRITE_TIMEOUT));
        if let Err(why) = super::validate::check(session.req_header()) {
            tracing::debug!(reason = why, "refusing a malformed request");
            session.respond_error(400).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let l = self.listener()?;
        let http = self.http()?;
        let settings = l.settings();
        let s = http.settings();
        let now = Instant::now();
        if let Some(prev) = ctx.current.take() {
            // A retry: the previous attempt failed before a response.
            ctx.tried.push(prev.endpoint().addr());
            let over_time = !s.total_timeout.is_zero()
                && now.saturating_duration_since(ctx.started) >= s.total_timeout;
            if over_time || ctx.tried.len() > s.retries as usize || !http.budget().try_retry(now) {
                http.stats.retries_denied.fetch_add(1, Relaxed);
                return Error::e_explain(
                    ErrorType::HTTPStatus(502),
                    "backend failed and no retry is left",
                );
            }
            http.stats.retries.fetch_add(1, Relaxed);
        } else {
            http.budget().on_request(now);
        }
        let client = client_of(session);
        let key = {
            let headers = session.req_header();
            s.hash_key.key(
                |name| {
                    headers
                        .headers
                        .get_all(name)
                        .iter()
                        .map(|v| v.as_bytes())
                        .collect()
                },
                client.map(|c| c.ip()),
            )
        };
        let Some(ep) = l.pool().pick(key, &ctx.tried) else {
            // Every backend left was tried: say why the last one failed,
            // unless none could be reached at all.
            return match ctx.failed {
                None | Some(Failed::Connect) => {
                    Error::e_explain(ErrorType::HTTPStatus(503), "no healthy backend")
                }
                Some(Failed::Timeout) => {
                    Error::e_explain(ErrorType::HTTPStatus(504), "backend timed out")
                }
                Some(Failed::Other) => Error::e_explain(
                    ErrorType::HTTPStatus(502),
                    "backend failed and no retry is left",
                ),
            };
        };
        ctx.picked_at = now;
        let mut peer = HttpPeer::new(ep.addr(), false, String::new());
        ctx.current = Some(ep.open());
        let o = &mut peer.options;
        o.connection_timeout = Some(settings.connect_timeout);
        if !s.read_timeout.is_zero() {
            o.read_timeout = Some(s.read_timeout);
        }
        if !s.total_timeout.is_zero() {
            // What is left of the request's time bounds the connect, every
            // write and every read of this attempt.
            let left = s
                .total_timeout
                .saturating_sub(now.saturating_duration_since(ctx.started))
                .max(std::time::Duration::from_millis(1));
            o.total_connection_timeout = Some(left);
            o.write_timeout = Some(left);
            o.read_timeout = Some(o.read_timeout.map_or(left, |r| r.min(left)));
        }
        if s.upstream_h2 {
            o.set_http_version(2, 2);
        }
        let proxy_v2 = match (settings.send_proxy_v2, client, server_of(session)) {
            (true, Some(source), Some(destination)) => Some((source, destination)),
            _ => None,
        };
        if let Some((source, _)) = proxy_v2 {
            peer.group_key = hash_addr(source, 0x7072_6f78);
        }
        if proxy_v2.is_some() || !l.sockets().is_plain() {
            o.custom_l4 = Some(Arc::new(UpstreamConnect {
                sockets: Arc::clone(l.sockets()),
                proxy_v2,
            }));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if !self.http()?.settings().forwarded_headers {
            return Ok(());
        }
        let Some(client) = client_of(session) else {
            return Ok(());
        };
        let proto = if session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some()
        {
            "https"
        } else {
            "http"
        };
        let h = &req.headers;
        let all = |name: &str| joined(h.get_all(name).iter().map(|v| v.as_bytes()));
        let xff = x_forwarded_for(all("x-forwarded-for").as_deref(), client.ip());
        let fwd = forwarded_for(
            all("forwarded").as_deref(),
            client.ip(),
            server_of(session),
            proto,
            h.get("host").map(|v| v.as_bytes()),
        );
        req.insert_header("x-forwarded-for", xff)?;
        req.insert_header("forwarded", fwd)?;
        req.insert_header("x-forwarded-proto", HeaderValue::from_static(proto))?;
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        let http = self.http()?;
        let c = if reused {
            &http.stats.upstream_reused
        } else {
            &http.stats.upstream_new
        };
        c.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.status = Some(status);
        if let (Ok(l), Some(ep)) = (self.listener(), ctx.endpoint()) {
            let rtt = ctx.picked_at.elapsed();
            ep.http.responses.count(status);
            ep.http.latency.observe(rtt);
            let pool = l.pool();
            if status >= 500 {
                pool.report_error(ep);
            } else {
                pool.report_success(ep, rtt);
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Ok(l), Some(ep)) = (self.listener(), ctx.endpoint()) {
            l.pool().report_failure(ep);
        }
        ctx.failed = Some(Failed::Connect);
        // Nothing reached the backend: always safe to try another.
        e.set_retry(true);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if *e.esource() == ErrorSource::Downstream {
            // The client failed (a stalled or cut request body): the backend
            // is not to blame, and another would fare no better.
            let mut e = e;
            e.set_retry(false);
            return e;
        }
        ctx.failed = Some(match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failed::Timeout,
            _ => Failed::Other,
        });
        // A reset or timeout from the backend counts against its health.
        if ctx.status.is_none() {
            if let (Ok(l), Some(ep)) = (self.listener(), ctx.endpoint()) {
                l.pool().report_error(ep);
            }
        }
        let mut e = e.more_context(format!("backend {peer}"));
        let idempotent = session.req_header().method.is_idempotent();
        if idempotent && !session.as_ref().retry_buffer_truncated() && ctx.status.is_none() {
            e.set_retry(true);
        } else if !idempotent {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            // Out of retries, or out of time, after a timeout.
            (ErrorType::HTTPStatus(502), _) if ctx.failed == Some(Failed::Timeout) => 504,
            (ErrorType::HTTPStatus(code), _) => *code,
            (_, ErrorSource::Upstream) if ctx.failed == Some(Failed::Timeout) => 504,
            (_, ErrorSource::Upstream) => 502,
            // The client is gone: nothing to answer.
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
        };
        if code > 0 {
            if let Err(e) = session.respond_error(code).await {
                tracing::debug!(error = %e, "cannot send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        if let Ok(http) = self.http() {
            let status = session
                .response_written()
                .map(|r| r.status.as_u16())
                .unwrap_or(0);
            http.stats.responses.count(status);
            http.stats.latency.observe(ctx.started.elapsed());
        }
        ctx.current = None;
    }
}
