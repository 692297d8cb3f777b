//! HTTP test support: backends that can be killed like a process (their
//! own runtime on their own thread, every connection dropped at once), and
//! a keep-alive client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What a backend knows and can be told.
#[derive(Default)]
pub struct BackendState {
    pub name: String,
    /// Requests served.
    pub requests: AtomicU64,
    /// When not 0, every request gets this status.
    pub force_status: AtomicU16,
}

/// An HTTP backend on its own runtime. `kill` drops every connection at
/// once, as a dying process would.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    runtime: Option<tokio::runtime::Runtime>,
}

async fn echo(State(s): State<Arc<BackendState>>, headers: HeaderMap) -> (StatusCode, String) {
    s.requests.fetch_add(1, Relaxed);
    let forced = s.force_status.load(Relaxed);
    let status = StatusCode::from_u16(if forced == 0 { 200 } else { forced }).unwrap();
    let mut body = format!("{}\n", s.name);
    for (k, v) in &headers {
        body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    (status, body)
}

async fn sleep(State(s): State<Arc<BackendState>>, Path(ms): Path<u64>) -> String {
    s.requests.fetch_add(1, Relaxed);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("{}\n", s.name)
}

async fn status(State(s): State<Arc<BackendState>>, Path(code): Path<u16>) -> StatusCode {
    s.requests.fetch_add(1, Relaxed);
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

impl HttpBackend {
    pub fn start(name: &str) -> HttpBackend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(name: &str, addr: SocketAddr) -> HttpBackend {
        let state = Arc::new(BackendState {
            name: name.to_string(),
            ..Default::default()
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind(addr).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let app = Router::new()
            .route("/status/{code}", get(status))
            .route("/sleep/{ms}", get(sleep).post(sleep))
            .fallback(echo)
            .with_state(Arc::clone(&state));
        runtime.spawn(async move {
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let _ = axum::serve(l, app).await;
        });
        HttpBackend {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Relaxed)
    }

    /// Stops at once: the listener and every connection close.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A keep-alive HTTP/1.1 (or, with `h2`, HTTP/2 prior knowledge) client.
pub fn client(h2: bool) -> Client<HttpConnector, Empty<Bytes>> {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(30));
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

/// A GET's status, body, and the response's HTTP version.
pub async fn get_with(
    c: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, hyper::Version), String> {
    let mut req = hyper::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).to_string(), version))
}

/// The backend name (first line) and the request headers it saw.
pub fn parse_echo(body: &str) -> (String, BTreeMap<String, String>) {
    let mut lines = body.lines();
    let name = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (name, headers)
}
