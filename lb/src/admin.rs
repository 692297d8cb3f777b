//! The admin listener: `GET /metrics` (Prometheus text) and `GET /backends`
//! (JSON), served with axum on the proxy's runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::pool::HealthState;
use crate::runtime::Runtime;

/// One backend as `/backends` shows it.
#[derive(Debug, Serialize)]
pub struct BackendView {
    /// Backend address.
    pub address: SocketAddr,
    /// Configured weight.
    pub weight: u32,
    /// Whether it is a backup.
    pub backup: bool,
    /// Current health state.
    pub health: HealthState,
    /// Connections open now.
    pub active: u64,
    /// Connections handed to it so far.
    pub total: u64,
}

/// One listener as `/backends` shows it.
#[derive(Debug, Serialize)]
pub struct ListenerView {
    /// Listener name.
    pub listener: String,
    /// Listening address.
    pub listen: SocketAddr,
    /// Balancing policy.
    pub policy: String,
    /// Whether the pool is in panic mode.
    pub panic: bool,
    /// The backends, in config order.
    pub backends: Vec<BackendView>,
}

/// What `/backends` returns.
pub fn backends(rt: &Runtime) -> Vec<ListenerView> {
    rt.listeners()
        .iter()
        .map(|l| {
            let pool = l.pool();
            ListenerView {
                listener: l.name().to_string(),
                listen: l.addr(),
                policy: pool.config().policy.to_string(),
                panic: pool.is_panicking(),
                backends: pool
                    .endpoints()
                    .iter()
                    .map(|e| BackendView {
                        address: e.addr(),
                        weight: e.weight(),
                        backup: e.is_backup(),
                        health: pool.health_of(e),
                        active: e.active(),
                        total: e.total(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The admin routes.
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(rt): State<Arc<Runtime>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::metrics::render(&rt.listeners()),
                )
                    .into_response()
            }),
        )
        .route(
            "/backends",
            get(|State(rt): State<Arc<Runtime>>| async move { Json(backends(&rt)) }),
        )
        .with_state(rt)
}

/// Serves the admin routes on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, rt: Arc<Runtime>) -> std::io::Result<()> {
    axum::serve(listener, router(rt)).await
}
