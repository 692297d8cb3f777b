//! A listener's sockets come from the embedder: here outbound connections
//! bound to a source address (as netd binds them to a node's lb address),
//! in both modes, through the library's runtime.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_lb::config::{Config, ListenerConfig, Mode};
use shoal_lb::http::HttpSettings;
use shoal_lb::proxy::ProxySettings;
use shoal_lb::runtime::Runtime;
use shoal_lb::sockets::{FromSource, Sockets};
use shoal_lb::{Backend, PolicyKind, PoolConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::free_addr;

/// A backend that answers every connection with the peer address it saw
/// (as an HTTP response, which also reads fine over raw TCP).
async fn peer_reporter() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = peer.ip().to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn seen_by_backend(mode: Mode) -> String {
    let backend = peer_reporter().await;
    let listen = free_addr();
    let config = Config {
        admin: None,
        drain_timeout: Duration::from_secs(1),
        listeners: vec![ListenerConfig {
            name: "l".into(),
            listen,
            pool: PoolConfig::new(vec![Backend::new(backend)], PolicyKind::RoundRobin),
            proxy: ProxySettings::default(),
            mode,
            http: HttpSettings::default(),
        }],
    };
    let source: IpAddr = [127, 0, 0, 2].into();
    let rt = Runtime::start_with(
        config,
        Arc::new(move |_| Arc::new(FromSource { source }) as Arc<dyn Sockets>),
    )
    .unwrap();
    let mut c = TcpStream::connect(listen).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    rt.drain(Duration::from_secs(1)).await;
    out.rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn tcp_mode_connects_from_the_given_source() {
    assert_eq!(seen_by_backend(Mode::Tcp).await, "127.0.0.2");
}

#[tokio::test]
async fn http_mode_connects_from_the_given_source() {
    assert_eq!(seen_by_backend(Mode::Http).await, "127.0.0.2");
}
