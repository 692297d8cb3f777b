//! Edge cases a review found, kept as regression tests: bytes a backend
//! sends after its response, PROXY v2 connections that must not pile up,
//! and a response head that starts with an empty line.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::http::HttpSettings;
use crate::policy::PolicyKind;
use crate::pool::{Pool, PoolConfig};
use crate::proxy::{Listener, ProxySettings};
use crate::sockets::Local;

/// A listener in HTTP mode on loopback in front of `backend`.
pub(super) async fn listener(
    backend: std::net::SocketAddr,
    proxy: ProxySettings,
    http: HttpSettings,
) -> (std::net::SocketAddr, Arc<Listener>) {
    let pool = Pool::new(PoolConfig::new(
        vec![Backend::new(backend)],
        PolicyKind::RoundRobin,
    ))
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let l = Listener::new("r".into(), addr, pool, proxy, Some(http), Arc::new(Local));
    tokio::spawn(Arc::clone(&l).serve(tcp, TaskTracker::new()));
    (addr, l)
}

/// Reads until the end of a request head (skipping a PROXY v2 header).
async fn read_head(c: &mut TcpStream, proxy_v2: bool) -> bool {
    if proxy_v2 {
        let mut h = [0u8; 16];
        if c.read_exact(&mut h).await.is_err() {
            return false;
        }
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        let mut rest = vec![0u8; len];
        if c.read_exact(&mut rest).await.is_err() {
            return false;
        }
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
    }
    true
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A backend on loopback serving each connection with `serve`; its
/// address and how many connections it accepted.
async fn backend<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            tokio::spawn(serve(c));
        }
    });
    (addr, accepted)
}

/// Answers `ok` to every request of a connection that starts with a PROXY
/// v2 header.
async fn ok_after_proxy_v2(mut c: TcpStream) {
    let mut first = true;
    while read_head(&mut c, first).await {
        first = false;
        let _ = c
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
    }
}

/// A backend writes a few bytes more than its Content-Length says, in a
/// later segment (a HEAD answered with a body, a wrong Content-Length).
/// Such a pooled connection must never carry the next request, of any
/// client, which would get those bytes as its response (pingora's pool
/// evicts an idle connection on any byte; the fast path checks before
/// reuse).
#[tokio::test]
async fn late_extra_bytes_on_a_pooled_connection_answer_the_next_client() {
    let (baddr, _) = backend(|mut c| async move {
        if !read_head(&mut c, false).await {
            return;
        }
        let _ = c
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = c
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
            .await;
        // Later requests on this connection are answered properly.
        while read_head(&mut c, false).await {
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
                .await;
        }
    })
    .await;
    let (addr, _l) = listener(baddr, ProxySettings::default(), HttpSettings::default()).await;
    assert!(get(addr, "/alice").await.ends_with("hello"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bob = get(addr, "/bob").await;
    assert!(
        !bob.contains("POISON"),
        "another client got the previous response's leftover bytes: {bob:?}"
    );
}

/// With `send_proxy_v2`, an upstream connection speaks for one client
/// connection, so it must not outlive it in a shared pool where nothing
/// can reuse it: closed client connections leave no idle upstream ones.
#[tokio::test]
async fn proxy_v2_connections_leave_nothing_idle_when_their_client_goes() {
    let (baddr, accepted) = backend(ok_after_proxy_v2).await;
    let proxy = ProxySettings {
        send_proxy_v2: true,
        ..ProxySettings::default()
    };
    let http = HttpSettings {
        pool_size: 4,
        ..HttpSettings::default()
    };
    let (addr, l) = listener(baddr, proxy, http).await;
    for i in 0..40 {
        assert!(get(addr, &format!("/{i}")).await.ends_with("ok"));
    }
    let idle = l.http().unwrap().idle.len();
    assert_eq!(
        idle,
        0,
        "{idle} idle upstream connections ({} opened), none reusable",
        accepted.load(SeqCst)
    );
}

/// httparse skips empty lines before a status line; a rewritten head keeps
/// the status, and such a head is never passed on byte for byte.
#[test]
fn a_rewritten_head_after_an_empty_line_keeps_its_status() {
    let raw = b"\r\nHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let super::response::Parsed::Ready(r) = super::response::parse(raw, false) else {
        panic!("an empty line before the status line is allowed")
    };
    assert!(!r.verbatim, "the empty line must not reach the client");
    let mut out = Vec::new();
    super::response::rewrite(raw, false, &mut out);
    let s = String::from_utf8_lossy(&out);
    assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s:?}");
}

/// ... while one client connection's requests reuse its own upstream
/// connection, whose PROXY v2 header named that client once.
#[tokio::test]
async fn proxy_v2_connections_are_reused_by_their_own_client_connection() {
    let (baddr, accepted) = backend(ok_after_proxy_v2).await;
    let proxy = ProxySettings {
        send_proxy_v2: true,
        ..ProxySettings::default()
    };
    let (addr, _l) = listener(baddr, proxy, HttpSettings::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let mut b = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
    }
    assert_eq!(
        accepted.load(SeqCst),
        1,
        "one upstream connection for the three"
    );
}

/// A backend that sent an interim response (103) and then failed has
/// started the response: the request is not sent again, the client gets
/// the 103 and then a 502.
#[tokio::test]
async fn no_retry_once_an_interim_response_went_to_the_client() {
    let (baddr, accepted) = backend(|mut c| async move {
        if read_head(&mut c, false).await {
            let _ = c
                .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                .await;
        }
        // and the backend dies: the connection closes
    })
    .await;
    let (addr, _l) = listener(baddr, ProxySettings::default(), HttpSettings::default()).await;
    let got = get(addr, "/").await;
    assert!(got.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{got:?}");
    assert!(got.contains("HTTP/1.1 502 "), "{got:?}");
    assert_eq!(accepted.load(SeqCst), 1, "sent once");
}
