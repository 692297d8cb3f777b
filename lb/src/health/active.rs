//! Active health checks: one task per backend, checking every `interval`
//! plus a random jitter (the first check too, so that many backends are not
//! checked in lock-step, envoy#4132), with rise and fall thresholds.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use super::{Check, HealthSettings};
use crate::endpoint::Endpoint;
use crate::pool::Pool;
use crate::sockets::{Local, Sockets};

/// Runs one check against `addr`; true if it passed within the timeout.
pub async fn check_once(addr: SocketAddr, s: &HealthSettings) -> bool {
    check_once_with(&Local, addr, s).await
}

/// [`check_once`] with the connection's socket made by `sockets` (for
/// checks that must leave from another namespace or address).
pub async fn check_once_with(sockets: &dyn Sockets, addr: SocketAddr, s: &HealthSettings) -> bool {
    match timeout(s.timeout, probe(sockets, addr, &s.check)).await {
        Ok(Ok(ok)) => ok,
        _ => false,
    }
}

async fn connect(sockets: &dyn Sockets, addr: SocketAddr) -> std::io::Result<TcpStream> {
    sockets.outbound(addr)?.connect(addr).await
}

async fn probe(sockets: &dyn Sockets, addr: SocketAddr, check: &Check) -> std::io::Result<bool> {
    match check {
        Check::None => Ok(true),
        Check::Tcp => connect(sockets, addr).await.map(|_| true),
        Check::Http { path } => {
            let mut s = connect(sockets, addr).await?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shoal-lb\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            let mut buf = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            loop {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(false);
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&buf) {
                    Ok(_) if resp.code.is_some() => {
                        return Ok(resp.code.is_some_and(|c| (200..300).contains(&c)))
                    }
                    Ok(_) if buf.len() < 8192 => continue,
                    _ => return Ok(false),
                }
            }
        }
    }
}

/// The checking loop of one backend; ends when the pool is gone.
pub(crate) async fn run(pool: Weak<Pool>, ep: Arc<Endpoint>, s: HealthSettings) {
    let jitter = |s: &HealthSettings| {
        if s.jitter.is_zero() {
            std::time::Duration::ZERO
        } else {
            rand::thread_rng().gen_range(std::time::Duration::ZERO..=s.jitter)
        }
    };
    sleep(jitter(&s)).await;
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        let ok = check_once(ep.addr(), &s).await;
        if ok {
            passes = passes.saturating_add(1);
            fails = 0;
        } else {
            fails = fails.saturating_add(1);
            passes = 0;
        }
        let verdict = if !ep.checked_up() && passes >= s.rise.max(1) {
            Some(true)
        } else if ep.checked_up() && fails >= s.fall.max(1) {
            Some(false)
        } else {
            None
        };
        if let Some(up) = verdict {
            let Some(pool) = pool.upgrade() else { return };
            pool.set_checked(&ep, up);
        }
        if pool.strong_count() == 0 {
            return;
        }
        sleep(s.interval + jitter(&s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn settings(check: Check) -> HealthSettings {
        HealthSettings {
            check,
            timeout: Duration::from_millis(500),
            ..Default::default()
        }
    }

    async fn http_server(status: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_check_passes_on_a_listener_and_fails_on_a_closed_port() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(check_once(addr, &settings(Check::Tcp)).await);
        drop(l);
        assert!(!check_once(addr, &settings(Check::Tcp)).await);
    }

    #[tokio::test]
    async fn http_check_wants_2xx() {
        let http = |p: &str| Check::Http { path: p.into() };
        let ok = http_server("204 No Content").await;
        assert!(check_once(ok, &settings(http("/healthz"))).await);
        let bad = http_server("503 Service Unavailable").await;
        assert!(!check_once(bad, &settings(http("/healthz"))).await);
    }

    #[tokio::test]
    async fn a_silent_backend_fails_by_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let s = HealthSettings {
            timeout: Duration::from_millis(100),
            ..settings(Check::Http { path: "/".into() })
        };
        // Accepted by the kernel, never answered.
        assert!(!check_once(addr, &s).await);
        drop(l);
    }
}
