//! The client-side timeouts of the fast path, on a paused clock (tokio
//! moves it forward whenever every task waits), with real sockets.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{IDLE_TIMEOUT, REQUEST_TIMEOUT};
use crate::backend::Backend;
use crate::http::HttpSettings;
use crate::policy::PolicyKind;
use crate::pool::{Pool, PoolConfig};
use crate::proxy::{Listener, ProxySettings};
use crate::sockets::Local;

/// A listener in HTTP mode on loopback; its backend never answers (the
/// tests never send a whole request).
async fn listener() -> (std::net::SocketAddr, Arc<Listener>) {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pool = Pool::new(PoolConfig::new(
        vec![Backend::new(backend.local_addr().unwrap())],
        PolicyKind::RoundRobin,
    ))
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let l = Listener::new(
        "t".into(),
        addr,
        pool,
        ProxySettings::default(),
        Some(HttpSettings::default()),
        Arc::new(Local),
    );
    tokio::spawn(Arc::clone(&l).serve(tcp, TaskTracker::new()));
    (addr, l)
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
