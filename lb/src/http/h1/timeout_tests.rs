//! The client-side timeouts of the fast path, on a paused clock (tokio
//! moves it forward whenever every task waits), with real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::{IDLE_TIMEOUT, REQUEST_TIMEOUT, WRITE_TIMEOUT};
use crate::http::HttpSettings;
use crate::proxy::{Listener, ProxySettings};

/// A listener in HTTP mode on loopback; its backend never answers (the
/// tests never send a whole request).
async fn listener() -> (SocketAddr, Arc<Listener>) {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener_to(backend.local_addr().unwrap()).await
}

/// A listener in HTTP mode on loopback in front of `backend`.
async fn listener_to(backend: SocketAddr) -> (SocketAddr, Arc<Listener>) {
    super::edge_tests::listener(backend, ProxySettings::default(), HttpSettings::default()).await
}

/// Waits (on the paused clock, `step` at a time, at most `limit`) until
/// the proxy has closed `c`; sends `trickle` at every step. The time it
/// took.
async fn closed_after(
    c: &mut TcpStream,
    step: Duration,
    limit: Duration,
    trickle: &[u8],
) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        tokio::time::sleep(step).await;
        let mut b = [0u8; 64];
        match c.try_read(&mut b) {
            Ok(0) => return t0.elapsed(),
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return t0.elapsed(),
            _ => {}
        }
        if !trickle.is_empty() && c.write_all(trickle).await.is_err() {
            return t0.elapsed();
        }
    }
    panic!("still open after {limit:?}");
}

#[tokio::test(start_paused = true)]
async fn a_client_trickling_its_head_is_cut_off_after_the_request_timeout() {
    let (addr, _l) = listener().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // A field every 5 s: each read is quick, the head never ends.
    let took = closed_after(
        &mut c,
        Duration::from_secs(5),
        REQUEST_TIMEOUT * 3,
        b"X: y\r\n",
    )
    .await;
    assert!(
        took >= REQUEST_TIMEOUT - Duration::from_secs(5)
            && took <= REQUEST_TIMEOUT + Duration::from_secs(10),
        "closed after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (addr, _l) = listener().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let took = closed_after(&mut c, Duration::from_secs(5), IDLE_TIMEOUT * 3, b"").await;
    assert!(
        took >= IDLE_TIMEOUT - Duration::from_secs(5)
            && took <= IDLE_TIMEOUT + Duration::from_secs(10),
        "closed after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_a_response_is_cut_off_after_the_write_timeout() {
    // One response far larger than all the socket buffers between the
    // backend and the client can hold.
    const BODY: usize = 64 << 20;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _l) = listener_to(backend.local_addr().unwrap()).await;
    tokio::spawn(async move {
        let (mut up, _) = backend.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = up.read(&mut head).await;
        let chunk = vec![b'x'; 1 << 20];
        let _ = up
            .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n").as_bytes())
            .await;
        for _ in 0..BODY / chunk.len() {
            if up.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing for longer than the write timeout ...
    tokio::time::sleep(WRITE_TIMEOUT + Duration::from_secs(10)).await;
    // ... and then finds the response cut short and the connection closed,
    // not the rest of the body still coming.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got += n,
            Err(_) => break false,
        }
    };
    assert!(ended, "the connection is still open after {got} bytes");
    assert!(got < BODY, "the whole response arrived ({got} bytes)");
}
