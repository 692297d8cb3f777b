//! The HTTP/1.1 fast path through the real binary, with byte-exact clients
//! and backends: chunked and streamed responses on reused connections,
//! pooled connections the backend closed, request bodies and pipelining,
//! HEAD, and a connection moving to pingora half way.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http_support::*;
use crate::support::*;

/// A backend that speaks HTTP/1.1 by hand. `GET /chunked` answers a
/// chunked body written in three pieces; `POST /echo` answers the body it
/// got; anything else `ok`. After a response it waits `linger` for the next
/// request, then closes the connection without a word (as a backend whose
/// keep-alive timeout ran out).
struct RawBackend {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    async fn start(linger: Duration) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Relaxed);
                tokio::spawn(serve_raw(s, Arc::clone(&r), linger));
            }
        });
        RawBackend {
            addr,
            connections,
            requests,
            task,
        }
    }
}

async fn serve_raw(mut s: TcpStream, requests: Arc<AtomicU64>, linger: Duration) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(linger, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_string)
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        requests.fetch_add(1, Relaxed);
        let ok = if head.starts_with("GET /chunked ") {
            let pieces: [&[u8]; 3] = [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6;x=y\r\n world\r\n",
                b"0\r\nX-Trailer: 1\r\n\r\n",
            ];
            let mut ok = true;
            for p in pieces {
                ok &= s.write_all(p).await.is_ok();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ok
        } else if head.starts_with("POST /echo ") {
            let mut resp =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            resp.extend_from_slice(&body);
            s.write_all(&resp).await.is_ok()
        } else {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .await
                .is_ok()
        };
        if !ok {
            return;
        }
    }
}

async fn lb_to(addr: std::net::SocketAddr) -> Lb {
    Lb::flags(&["--mode", "http", "--backend", &addr.to_string()]).await
}

/// Appends what `s` has next to `rest` (by `deadline`, else panics).
async fn fill(s: &mut TcpStream, rest: &mut Vec<u8>, deadline: tokio::time::Instant) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
        .await
        .expect("response timed out")
        .unwrap();
    assert!(n > 0, "connection closed mid-response");
    rest.extend_from_slice(&chunk[..n]);
}

/// Reads one response head from `s` (after what `rest` holds), keeping
/// anything after it in `rest`.
async fn read_head(s: &mut TcpStream, rest: &mut Vec<u8>) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, rest, deadline).await;
    };
    let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
    rest.drain(..head_end);
    head
}

/// Reads one response (Content-Length or chunked framing) from `s`,
/// keeping anything after it in `rest`; returns the head and the raw body.
async fn read_response(s: &mut TcpStream, rest: &mut Vec<u8>) -> (String, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let head = read_head(s, rest).await;
    let lower = head.to_ascii_lowercase();
    let body_len = if lower.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = find_chunked_end(rest) {
                break i;
            }
            fill(s, rest, deadline).await;
        }
    } else if let Some(v) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len: usize = v.trim().parse().unwrap();
        while rest.len() < len {
            fill(s, rest, deadline).await;
        }
        len
    } else {
        0
    };
    let body = rest.drain(..body_len).collect();
    (head, body)
}

/// The end of a chunked body whose last chunk carries one trailer line.
fn find_chunked_end(b: &[u8]) -> Option<usize> {
    let last = b.windows(5).position(|w| w == b"\r\n0\r\n")?;
    let after = &b[last + 5..];
    after
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| last + 5 + i + 4)
}

#[tokio::test]
async fn chunked_responses_stream_and_the_connection_is_reused() {
    let b = RawBackend::start(Duration::from_secs(30)).await;
    let lb = lb_to(b.addr).await;
    let mut c = TcpStream::connect(lb.listen).await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..3 {
        c.write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut c, &mut rest).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            body,
            b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        );
    }
    assert_eq!(b.requests.load(Relaxed), 3);
    assert_eq!(
        b.connections.load(Relaxed),
        1,
        "the upstream connection was reused"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_costs_no_failed_request() {
    // The backend closes a connection 100 ms after its last response.
    let b = RawBackend::start(Duration::from_millis(100)).await;
    let lb = lb_to(b.addr).await;
    let mut c = TcpStream::connect(lb.listen).await.unwrap();
    let mut rest = Vec::new();
    for (i, req) in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
        b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        c.write_all(req).await.unwrap();
        let (head, _) = read_response(&mut c, &mut rest).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
    }
    assert_eq!(
        b.requests.load(Relaxed),
        4,
        "each request reached the backend once"
    );
    let text = http_get(lb.admin, "/metrics").await.1;
    let retries = text
        .lines()
        .find(|l| l.starts_with("shoal_lb_http_retries_total"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        retries.ends_with(" 0"),
        "a stale connection is not a retry: {retries}"
    );
}

#[tokio::test]
async fn request_bodies_pipelining_and_head_on_one_connection() {
    let b = RawBackend::start(Duration::from_secs(30)).await;
    let lb = lb_to(b.addr).await;
    let mut c = TcpStream::connect(lb.listen).await.unwrap();
    // Three requests in one write: the proxy answers them in order.
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world\
          HEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
          GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let mut rest = Vec::new();
    let (head, body) = read_response(&mut c, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello world");
    // HEAD: the head says 3 bytes, none follow.
    let head = read_head(&mut c, &mut rest).await;
    assert!(head.contains("Content-Length: 3"), "{head}");
    let (head, body) = read_response(&mut c, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    assert!(
        rest.is_empty(),
        "nothing extra: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn a_connection_moves_to_pingora_for_what_the_fast_path_does_not_carry() {
    let b0 = HttpBackend::start("b0");
    let lb = Lb::flags(&["--mode", "http", "--backend", &b0.addr.to_string()]).await;
    let mut c = TcpStream::connect(lb.listen).await.unwrap();
    let mut rest = Vec::new();
    // A plain GET (fast path), then a chunked request body (pingora), on
    // one connection; both answered, in order, by the backend.
    c.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut c, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).starts_with("b0\n"));
    c.write_all(
        b"POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut c, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert_eq!(b0.requests(), 2);
    // Counted: one connection handed over; the fast path's upstream
    // connection sits idle in its pool.
    let metrics = http_get(lb.admin, "/metrics").await.1;
    let value = |family: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(family))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {family} in {metrics}"))
            .to_string()
    };
    assert_eq!(value("shoal_lb_http_handoffs_total"), "1");
    assert_eq!(value("shoal_lb_http_idle_upstream_connections"), "1");
}

#[tokio::test]
async fn on_shutdown_the_next_request_is_answered_with_connection_close() {
    let b = RawBackend::start(Duration::from_secs(30)).await;
    let lb = lb_to(b.addr).await;
    let mut c = TcpStream::connect(lb.listen).await.unwrap();
    let mut rest = Vec::new();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut c, &mut rest).await;
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // The listener shuts down while the connection is idle; a request the
    // client sends just then is still answered, and is the last.
    lb.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut c, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"ok\n");
    let mut more = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut more))
        .await
        .expect("the connection stays open")
        .unwrap();
    assert_eq!(n, 0, "closed after the last response");
}
