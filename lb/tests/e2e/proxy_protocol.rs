//! The client address across hops, checked against HAProxy's own PROXY
//! protocol implementation in both directions and both modes.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::haproxy::Haproxy;
use crate::http_support::{parse_echo, HttpBackend};
use crate::support::*;

const CLIENT: [u8; 4] = [127, 0, 0, 7];

/// A GET sent from 127.0.0.7; the whole response text.
async fn try_get_from_client(to: SocketAddr) -> std::io::Result<String> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::from(CLIENT), 0))?;
    let mut s = sock.connect(to).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

async fn get_from_client(to: SocketAddr) -> String {
    try_get_from_client(to).await.unwrap()
}

async fn send_v2_to_haproxy(mode: &str) {
    let report = Haproxy::reporting_backend();
    let backend = report.addr.to_string();
    let lb = Lb::flags(&["--mode", mode, "--send-proxy-v2", "--backend", &backend]).await;
    let text = get_from_client(lb.listen).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("src=127.0.0.7:"), "{text}");
    // The destination is the address the client reached: shoal-lb's.
    assert!(text.contains(&format!("dst={}", lb.listen)), "{text}");
}

#[tokio::test]
async fn tcp_mode_sends_v2_that_haproxy_understands() {
    send_v2_to_haproxy("tcp").await;
}

#[tokio::test]
async fn http_mode_sends_v2_that_haproxy_understands() {
    send_v2_to_haproxy("http").await;
}

#[tokio::test]
async fn http_mode_accepts_v2_from_haproxy_and_forwards_the_client() {
    let backend = HttpBackend::start("b0");
    let b = backend.addr.to_string();
    let lb = Lb::flags(&["--mode", "http", "--accept-proxy", "--backend", &b]).await;
    let front = Haproxy::front_sending_v2(lb.listen);
    let text = get_from_client(front.addr).await;
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let (name, headers) = parse_echo(body);
    assert_eq!(name, "b0");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.7");
}

#[tokio::test]
async fn tcp_mode_relays_the_client_from_haproxy_to_haproxy() {
    let report = Haproxy::reporting_backend();
    let b = report.addr.to_string();
    let lb = Lb::flags(&["--accept-proxy", "--send-proxy-v2", "--backend", &b]).await;
    let front = Haproxy::front_sending_v2(lb.listen);
    let text = get_from_client(front.addr).await;
    assert!(text.contains("src=127.0.0.7:"), "{text}");
    // The destination is what the client reached: the front's address.
    assert!(text.contains(&format!("dst={}", front.addr)), "{text}");
}

#[tokio::test]
async fn a_connection_without_the_header_is_closed_unproxied() {
    let backend = HttpBackend::start("b0");
    let b = backend.addr.to_string();
    let lb = Lb::flags(&["--mode", "http", "--accept-proxy", "--backend", &b]).await;
    // Closed without an answer (a reset, as the request went unread).
    match try_get_from_client(lb.listen).await {
        Ok(text) => assert_eq!(text, ""),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert_eq!(backend.requests(), 0);
    let metrics = http_get(lb.admin, "/metrics").await.1;
    assert!(
        metrics.contains(&format!(
            "shoal_lb_listener_bad_proxy_header_total{{listener=\"{}\"}} 1",
            lb.listen
        )),
        "{metrics}"
    );
}
