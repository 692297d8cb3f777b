//! HTTP mode through the real binary: per-request balancing, pooling,
//! h2c, forwarded headers, retries when a replica dies, 5xx ejection,
//! malformed requests, upgrades and an empty pool.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http_support::*;
use crate::support::*;

async fn lb_http(backends: &[&HttpBackend], extra: &[&str]) -> Lb {
    let mut args: Vec<String> = vec!["--mode".into(), "http".into()];
    for b in backends {
        args.push("--backend".into());
        args.push(b.addr.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Lb::flags(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
}

#[tokio::test]
async fn requests_balance_per_request_over_pooled_connections() {
    let (b0, b1) = (HttpBackend::start("b0"), HttpBackend::start("b1"));
    let lb = lb_http(&[&b0, &b1], &["--policy", "round-robin"]).await;
    let c = client(false);
    let url = format!("http://{}/x", lb.listen);
    let mut names = Vec::new();
    for _ in 0..20 {
        let (status, body, _) = get_with(&c, &url, &[]).await.unwrap();
        assert_eq!(status, 200);
        names.push(parse_echo(&body).0);
    }
    // One client connection, yet requests alternate: balancing is per request.
    assert_eq!(names[..4], ["b0", "b1", "b0", "b1"]);
    assert_eq!((b0.requests(), b1.requests()), (10, 10));
    let text = http_get(lb.admin, "/metrics").await.1;
    let l = format!("listener=\"{}\"", lb.listen);
    // One upstream connection per backend, reused for everything else.
    assert_eq!(
        metric(
            &text,
            &format!("shoal_lb_http_upstream_requests_total{{{l},reused=\"false\"}}")
        ),
        2
    );
    assert_eq!(
        metric(
            &text,
            &format!("shoal_lb_http_upstream_requests_total{{{l},reused=\"true\"}}")
        ),
        18
    );
    assert_eq!(
        metric(
            &text,
            &format!("shoal_lb_http_responses_total{{{l},class=\"2xx\"}}")
        ),
        20
    );
    assert_eq!(
        metric(
            &text,
            &format!("shoal_lb_http_request_duration_seconds_count{{{l}}}")
        ),
        20
    );
}

#[tokio::test]
async fn the_backend_learns_the_client_address_from_forwarded_headers() {
    let b0 = HttpBackend::start("b0");
    let lb = lb_http(&[&b0], &[]).await;
    let c = client(false);
    let url = format!("http://{}/", lb.listen);
    let (_, body, _) = get_with(&c, &url, &[("x-forwarded-for", "203.0.113.9")])
        .await
        .unwrap();
    let (_, h) = parse_echo(&body);
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["forwarded"],
        format!(
            "for=127.0.0.1;by=127.0.0.1;host=\"{}\";proto=http",
            lb.listen
        )
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let b0 = HttpBackend::start("b0");
    let lb = lb_http(&[&b0], &[]).await;
    let c = client(true);
    let url = format!("http://{}/h2", lb.listen);
    for _ in 0..3 {
        let (status, body, version) = get_with(&c, &url, &[]).await.unwrap();
        assert_eq!((status, version), (200, hyper::Version::HTTP_2));
        assert_eq!(parse_echo(&body).0, "b0");
    }
}

#[tokio::test]
async fn http2_to_backends_when_asked() {
    let b0 = HttpBackend::start("b0");
    let lb = lb_http(&[&b0], &["--upstream-h2"]).await;
    let (status, body, _) = get_with(&client(false), &format!("http://{}/", lb.listen), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    // axum reports no `connection` header on h2; HTTP/1.1 requests carry one.
    let (_, h) = parse_echo(&body);
    assert!(!h.contains_key("connection"), "{h:?}");
    assert_eq!(b0.requests(), 1);
}

#[tokio::test]
async fn a_replica_killed_under_load_costs_no_failed_get() {
    let (b0, mut b1, b2) = (
        HttpBackend::start("b0"),
        HttpBackend::start("b1"),
        HttpBackend::start("b2"),
    );
    // No active checks: retries hide the dead replica until three failed
    // connects eject it (the defaults).
    let lb = lb_http(&[&b0, &b1, &b2], &["--policy", "round-robin"]).await;
    let url = format!("http://{}/load", lb.listen);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (ok, failed, url) = (ok.clone(), failed.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = client(false);
            while std::time::Instant::now() < deadline {
                match get_with(&c, &url, &[]).await {
                    Ok((200, _, _)) => ok.fetch_add(1, Relaxed),
                    other => {
                        eprintln!("failed GET: {other:?}");
                        failed.fetch_add(1, Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    b1.kill();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Relaxed), 0, "GETs failed");
    assert!(ok.load(Relaxed) > 200, "only {} GETs", ok.load(Relaxed));
    let text = http_get(lb.admin, "/metrics").await.1;
    assert!(
        metric(
            &text,
            &format!("shoal_lb_http_retries_total{{listener=\"{}\"}}", lb.listen)
        ) > 0
    );
}

#[tokio::test]
async fn consecutive_5xx_eject_and_the_backend_returns_after_the_ejection() {
    let (b0, b1) = (HttpBackend::start("b0"), HttpBackend::start("b1"));
    let lb = lb_http(
        &[&b0, &b1],
        &[
            "--policy",
            "round-robin",
            "--eject-after",
            "3",
            "--ejection-time",
            "1s",
        ],
    )
    .await;
    let c = client(false);
    let url = format!("http://{}/", lb.listen);
    b1.state.force_status.store(503, Relaxed);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_with(&c, &url, &[]).await.unwrap().0);
    }
    // Round-robin sends b1 three requests, all 503: it is ejected.
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 3);
    assert_eq!(lb.health_of(b1.addr).await, "ejected");
    let ejections = |b: std::net::SocketAddr| {
        format!(
            "shoal_lb_backend_ejections_total{{listener=\"{}\",backend=\"{b}\"}}",
            lb.listen
        )
    };
    let text = http_get(lb.admin, "/metrics").await.1;
    assert_eq!(metric(&text, &ejections(b1.addr)), 1);
    assert_eq!(metric(&text, &ejections(b0.addr)), 0);
    for _ in 0..6 {
        assert_eq!(get_with(&c, &url, &[]).await.unwrap().0, 200);
    }
    assert_eq!(b1.requests(), 3);
    b1.state.force_status.store(0, Relaxed);
    lb.wait_health(b1.addr, "up", Duration::from_secs(3)).await;
    for _ in 0..4 {
        get_with(&c, &url, &[]).await.unwrap();
    }
    assert!(b1.requests() > 3, "b1 never came back");
}

#[tokio::test]
async fn malformed_requests_get_400_and_never_reach_a_backend() {
    let b0 = HttpBackend::start("b0");
    let lb = lb_http(&[&b0], &[]).await;
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(lb.listen).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{:?} -> {text}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(b0.requests(), 0);
    // The proxy still serves well-formed requests afterwards.
    let (status, _, _) = get_with(&client(false), &format!("http://{}/", lb.listen), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_unreachable_pool_answers_502_or_503_at_once() {
    let mut b0 = HttpBackend::start("b0");
    let lb = lb_http(&[&b0], &[]).await;
    b0.kill();
    let t = std::time::Instant::now();
    let (status, _, _) = get_with(&client(false), &format!("http://{}/", lb.listen), &[])
        .await
        .unwrap();
    assert!(status == 502 || status == 503, "{status}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn upgraded_connections_pass_through() {
    // A backend that accepts any upgrade and then echoes raw bytes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").await.unwrap();
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let args = ["--mode", "http", "--backend", &addr.to_string()];
    let lb = Lb::flags(&args).await;
    let mut c = TcpStream::connect(lb.listen).await.unwrap();
    c.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c.write_all(b"\x81\x05hello").await.unwrap();
    let mut echo = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"\x81\x05hello");
}

/// The status code answering one raw request on a new connection.
async fn status_of(to: std::net::SocketAddr, raw: &str) -> u16 {
    let mut c = TcpStream::connect(to).await.unwrap();
    c.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn a_backend_that_times_out_gives_504_to_every_method_on_both_paths() {
    let b0 = HttpBackend::start("b0");
    // One backend: a retry of a GET finds none left to try. Never ejected,
    // so that every request reaches it.
    let lb = lb_http(&[&b0], &["--read-timeout", "300ms", "--eject-after", "0"]).await;
    // HTTP/1.1 takes the fast path, HTTP/1.0 pingora's.
    for version in ["1.1", "1.0"] {
        for (method, body) in [("GET", ""), ("POST", "hi")] {
            let raw = format!(
                "{method} /sleep/3000 HTTP/{version}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(
                status_of(lb.listen, &raw).await,
                504,
                "{method} over HTTP/{version}"
            );
        }
    }
}

#[tokio::test]
async fn the_total_timeout_bounds_a_slow_backend_with_a_504_on_both_paths() {
    let b0 = HttpBackend::start("b0");
    let lb = lb_http(&[&b0], &["--total-timeout", "300ms"]).await;
    // HTTP/1.1 takes the fast path, h2c pingora's.
    for h2 in [false, true] {
        let c = client(h2);
        let t = std::time::Instant::now();
        let (status, _, version) = get_with(&c, &format!("http://{}/sleep/3000", lb.listen), &[])
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(status, 504, "{version:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
            "{version:?}: {took:?}"
        );
        // A quick request on the same proxy is unaffected.
        let (status, _, _) = get_with(&c, &format!("http://{}/sleep/10", lb.listen), &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
}
