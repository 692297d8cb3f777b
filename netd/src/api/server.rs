//! The API's routes and listeners.
//!
//! | Method and path | Does |
//! |---|---|
//! | `GET /v1/info` | this node, the revision it has applied, the store's reachability |
//! | `GET,POST /v1/networks`, `GET,DELETE /v1/networks/{name}` | networks |
//! | `GET,POST /v1/services`, `GET,PATCH,DELETE /v1/services/{name}` | services |
//! | `POST /v1/services/{name}/scale` `{"replicas": N}` | replica count |
//! | `GET /v1/services/{name}/tasks` | its endpoints on every node |
//! | `GET /v1/nodes` | live nodes |
//! | `GET,POST /v1/tasks`, `DELETE /v1/tasks/{name}` | this node's tasks |
//! | `POST /v1/tasks/{name}/pid` `{"pid": N}` | a task's process |
//! | `POST,DELETE /v1/stacks/{name}` | compose stacks, already parsed by the client (what was done is returned) |
//! | `GET /metrics` | Prometheus text |

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{parse_body, ApiError};
use crate::model::Service;
use crate::ops;
use crate::spec::{NetworkSpec, ServiceUpdate};
use crate::store::Store;
use crate::tasks::{Ending, TaskSpec, Tasks};

/// What the handlers work with.
#[derive(Clone)]
pub struct ApiState {
    /// The cluster store.
    pub store: Arc<dyn Store>,
    /// This node's tasks.
    pub tasks: Tasks,
    /// This node's name.
    pub node: String,
    /// Renders `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// The revision this node has applied.
    pub applied: tokio::sync::watch::Receiver<i64>,
}

type ApiResult<T> = Result<T, ApiError>;

/// The routes (without authentication).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(get_network).delete(remove_network),
        )
        .route("/v1/services", get(list_services).post(create_service))
        .route(
            "/v1/services/{name}",
            get(get_service)
                .patch(update_service)
                .delete(remove_service),
        )
        .route("/v1/services/{name}/scale", post(scale_service))
        .route("/v1/services/{name}/tasks", get(service_tasks))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/tasks", get(list_tasks).post(create_task))
        .route("/v1/tasks/{name}", get(get_task).delete(remove_task))
        .route("/v1/tasks/{name}/pid", post(set_pid))
        .route("/v1/stacks/{name}", post(deploy_stack).delete(remove_stack))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError {
                status: 404,
                error: "no such API path (see `netd --help`)".into(),
                field: None,
            }
        })
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The largest error body [`json_errors`] reads to reword.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Makes every error answer JSON, including those axum writes itself (a
/// method the path does not take, a body too large, a path it cannot
/// decode), so a client can always read `error`.
async fn json_errors(req: axum::extract::Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let allow = parts.headers.get(header::ALLOW).cloned();
    let error = match (status, &allow) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(a)) => format!(
            "method {method} is not allowed on this path (allowed: {})",
            a.to_str().unwrap_or_default()
        ),
        (StatusCode::METHOD_NOT_ALLOWED, None) => {
            format!("method {method} is not allowed on this path")
        }
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let mut out = ApiError {
        status: status.as_u16(),
        error,
        field: None,
    }
    .into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

#[derive(Serialize)]
struct Info {
    node: String,
    applied_revision: i64,
    store_revision: Option<i64>,
    store_error: Option<String>,
}

async fn info(State(s): State<ApiState>) -> Json<Info> {
    let (store_revision, store_error) = match s.store.range("node/").await {
        Ok((_, rev)) => (Some(rev), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Json(Info {
        node: s.node.clone(),
        applied_revision: *s.applied.borrow(),
        store_revision,
        store_error,
    })
}

async fn list_networks(State(s): State<ApiState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(ops::list_networks(s.store.as_ref()).await?))
}

async fn create_network(State(s): State<ApiState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let spec: NetworkSpec = parse_body(&body)?;
    let net = ops::create_network(s.store.as_ref(), spec).await?;
    Ok((StatusCode::CREATED, Json(net)))
}

async fn get_network(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(ops::get_network(s.store.as_ref(), &name).await?))
}

async fn remove_network(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    ops::remove_network(s.store.as_ref(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(State(s): State<ApiState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(ops::list_services(s.store.as_ref()).await?))
}

async fn create_service(State(s): State<ApiState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let svc: Service = parse_body(&body)?;
    let svc = ops::create_service(s.store.as_ref(), svc).await?;
    Ok((StatusCode::CREATED, Json(svc)))
}

async fn get_service(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(ops::get_service(s.store.as_ref(), &name).await?))
}

async fn update_service(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let update: ServiceUpdate = parse_body(&body)?;
    Ok(Json(
        ops::update_service(s.store.as_ref(), &name, update).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scale {
    replicas: u32,
}

async fn scale_service(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let scale: Scale = parse_body(&body)?;
    Ok(Json(
        ops::scale_service(s.store.as_ref(), &name, scale.replicas).await?,
    ))
}

async fn remove_service(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    ops::remove_service(s.store.as_ref(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn service_tasks(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    ops::get_service(s.store.as_ref(), &name).await?;
    Ok(Json(ops::service_tasks(s.store.as_ref(), &name).await?))
}

async fn list_nodes(State(s): State<ApiState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(ops::list_nodes(s.store.as_ref()).await?))
}

async fn list_tasks(State(s): State<ApiState>) -> Json<Vec<crate::tasks::Task>> {
    Json(s.tasks.list())
}

async fn get_task(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    s.tasks
        .get(&name)
        .map(Json)
        .ok_or_else(|| not_found("task", &name))
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError {
        status: 404,
        error: format!("no {kind} named `{name}` on this node"),
        field: None,
    }
}

async fn create_task(State(s): State<ApiState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let spec: TaskSpec = parse_body(&body)?;
    if spec.slot.is_some() {
        return Err(ApiError::bad(
            Some("slot"),
            "slots are netd's own (use `netd service scale`)",
        ));
    }
    let task = s.tasks.create(spec).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pid {
    pid: u32,
}

async fn set_pid(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let pid: Pid = parse_body(&body)?;
    Ok(Json(s.tasks.set_pid(&name, pid.pid).await?))
}

async fn remove_task(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    if s.tasks.remove(&name, Ending::Stop).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("task", &name))
    }
}

/// A stack as the client sends it (it parsed the compose file itself, so
/// errors point at lines of the user's file).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackBody {
    /// The stack's networks.
    pub networks: Vec<NetworkSpec>,
    /// The stack's services.
    pub services: Vec<Service>,
}

async fn deploy_stack(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let stack: StackBody = parse_body(&body)?;
    Ok(Json(
        ops::deploy_stack(s.store.as_ref(), &name, stack.networks, stack.services).await?,
    ))
}

async fn remove_stack(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(ops::remove_stack(s.store.as_ref(), &name).await?))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (s.metrics)(),
    )
}

/// Serves the API on a unix socket at `path` (mode 0600: root only),
/// replacing a stale socket file. Returns when `shutdown` resolves.
///
/// The socket is bound under a temporary name, given its mode, and only
/// then renamed into place (over a stale file, in one step), so nobody can
/// connect while it still has the mode the umask gave it.
pub async fn serve_unix(
    path: &Path,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the API on TCP; every request must carry
/// `Authorization: Bearer <token>`.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: Router,
    token: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = Arc::new(token);
    let router = router.layer(middleware::from_fn(
        move |headers: HeaderMap, req, next: Next| {
            let token = Arc::clone(&token);
            async move { authorize(&headers, &token, req, next).await }
        },
    ));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn authorize(
    headers: &HeaderMap,
    token: &str,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        let mut resp = ApiError {
            status: 401,
            error: "this API listener needs `Authorization: Bearer <token>` with the agent's token"
                .into(),
            field: None,
        }
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"netd\""),
        );
        resp
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }
}
