//! The HTTP/1.1 fast path: plain keep-alive requests proxied without
//! pingora's per-request machinery.
//!
//! Pingora costs about twice the CPU per request of nginx or HAProxy
//! (bench/README.md, "Where shoal-lb's time goes"): a boxed future per
//! request, header maps rebuilt and cloned, a hashed LRU pool, clock reads
//! on every poll. Most ingress traffic is small HTTP/1.1 requests on
//! keep-alive connections, so those take this path: the head is parsed in
//! place (httparse), written out once for the backend, sent on a pooled
//! connection, and the response head goes back byte for byte with as much
//! of the body as has arrived, in one write.
//!
//! Everything else is pingora's, decided per request before anything is
//! sent: the connection is handed over with the bytes already read
//! ([`Served::HandOff`]; see [`request`] for the list: h2c, upgrades,
//! chunked or large request bodies, HTTP/1.0, `Expect`). TLS connections
//! and listeners that speak HTTP/2 to backends never come here. Both paths
//! share the pool, policies, retry budget, passive health, forwarding
//! headers and counters, with the same rules.
//!
//! # Layout
//! - this file: the client connection's loop.
//! - [`request`]: the request head, checked and rewritten for the backend.
//! - [`exchange`]: one request's trip (pick, send, retry, relay).
//! - [`response`]: the response head and its body's framing.
//! - [`chunked`]: where a chunked body ends.
//! - [`idle`]: pooled upstream connections.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use self::exchange::{After, Buffers, Trip};
use self::request::{Parsed, Peer};
use crate::http::serve::HttpListener;
use crate::proxy::Listener;

pub mod chunked;
pub mod exchange;
pub mod idle;
pub mod request;
pub mod response;

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod timeout_tests;

/// How long a keep-alive connection may sit between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take to send a whole request (head and body) from
/// its first byte: a client trickling bytes cannot hold a connection longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write to the client may wait for it to read (nginx's
/// `send_timeout`, HAProxy's `timeout client`): a client that stops reading
/// a response cannot hold its connection, and the backend's, for ever. Both
/// paths use it, per write: here each piece of a response as it is read
/// from the backend (one read's worth, with the head) has its own limit.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle keep-alive connection is kept once the listener shuts
/// down, for a request the client may already be sending.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How a connection left the fast path.
#[derive(Debug)]
pub enum Served {
    /// It is finished (closed, or to be closed).
    Done,
    /// The next request is for pingora: the connection and the bytes
    /// already read from it.
    HandOff(TcpStream, Vec<u8>),
}

/// Serves `client`'s requests until it closes, a request is for pingora,
/// or the listener shuts down: then the request in progress, or one that
/// arrives within [`SHUTDOWN_GRACE`], is the last, answered with
/// `Connection: close`.
pub async fn serve(
    http: &HttpListener,
    listener: &Listener,
    mut client: TcpStream,
    peer: Peer,
    shutdown: &mut watch::Receiver<bool>,
) -> Served {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut bufs = Buffers::default();
    loop {
        let settings = http.settings();
        let proxy = listener.settings();
        let mut started = Instant::now();
        let mut req = loop {
            if !buf.is_empty() {
                match request::parse(&buf, &settings, peer, &mut out) {
                    Parsed::Partial => {}
                    Parsed::HandOff => return Served::HandOff(client, buf),
                    Parsed::Bad(why) => {
                        tracing::debug!(client = %peer.client, reason = why, "refusing a malformed request");
                        http.stats.responses.count(400);
                        http.stats.latency.observe(started.elapsed());
                        let _ = exchange::write_error(&mut client, 400, why, true).await;
                        return Served::Done;
                    }
                    Parsed::Ready(r) => break r,
                }
            }
            buf.reserve(4096);
            let read = if buf.is_empty() && *shutdown.borrow() {
                // Shutting down: a client may be sending its next request
                // right now, so closing at once could cut it. Wait a short
                // while for it (it is answered with `Connection: close`).
                tokio::time::timeout(SHUTDOWN_GRACE, client.read_buf(&mut buf)).await
            } else if buf.is_empty() {
                tokio::select! {
                    r = tokio::time::timeout(IDLE_TIMEOUT, client.read_buf(&mut buf)) => r,
                    _ = shutdown.changed() => continue,
                }
            } else {
                tokio::time::timeout_at(started + REQUEST_TIMEOUT, client.read_buf(&mut buf)).await
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Served::Done,
                Ok(Ok(n)) if n == buf.len() => started = Instant::now(),
                Ok(Ok(_)) => {}
            }
        };
        // The last request of a connection on a listener shutting down.
        req.close |= *shutdown.borrow();
        let end = req.head_len + req.body_len;
        while buf.len() < end {
            buf.reserve(end - buf.len());
            let by = started + REQUEST_TIMEOUT;
            match tokio::time::timeout_at(by, client.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Served::Done,
            }
        }
        out.extend_from_slice(&buf[req.head_len..end]);
        buf.drain(..end);
        let trip = Trip {
            http,
            listener,
            settings: &settings,
            proxy: &proxy,
            peer,
        };
        let after = trip
            .forward(&mut client, &req, &out, &mut bufs, started)
            .await;
        if after == After::Close {
            return Served::Done;
        }
    }
}
