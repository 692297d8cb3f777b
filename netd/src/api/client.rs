//! A small API client: one HTTP/1.1 request per connection, over the unix
//! socket or (with a token) TCP.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ApiError;

/// Where the agent's API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddr {
    /// `unix:///path/to/socket`.
    Unix(PathBuf),
    /// `http://HOST:PORT` (needs a token).
    Tcp(String),
}

impl std::str::FromStr for ApiAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<ApiAddr, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(format!("API address `{s}`: a unix socket path must be absolute (unix:///run/shoal/netd.sock)"));
            }
            Ok(ApiAddr::Unix(PathBuf::from(p)))
        } else if let Some(hp) = s.strip_prefix("http://") {
            let hp = hp.trim_end_matches('/');
            if hp.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("API address `{s}`: expected http://IP:PORT"));
            }
            Ok(ApiAddr::Tcp(hp.to_string()))
        } else {
            Err(format!(
                "API address `{s}`: expected unix:///path or http://IP:PORT"
            ))
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent cannot be reached.
    #[error("cannot reach the netd agent at {addr}: {why} (is `netd agent` running? set --api or SHOAL_API)")]
    Connect {
        /// Where we tried.
        addr: String,
        /// What happened.
        why: String,
    },
    /// The agent answered with an error.
    #[error("{}", .0.error)]
    Api(ApiError),
    /// The answer was not what the API promises.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// The agent took longer than [`REQUEST_TIMEOUT`] to answer.
    #[error("the netd agent at {0} did not answer within {REQUEST_TIMEOUT:?} (see its log)")]
    Timeout(String),
}

/// How long a request may take, answer included. The slowest requests
/// wait on the datapath (a task waits for its attachment, a stack removal
/// for its replicas to leave), each bounded well below this.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A client of one agent.
#[derive(Debug, Clone)]
pub struct Client {
    addr: ApiAddr,
    token: Option<String>,
}

impl Client {
    /// A client of the agent at `addr`, sending `token` when given.
    pub fn new(addr: ApiAddr, token: Option<String>) -> Client {
        Client { addr, token }
    }

    fn describe(&self) -> String {
        match &self.addr {
            ApiAddr::Unix(p) => format!("unix://{}", p.display()),
            ApiAddr::Tcp(hp) => format!("http://{hp}"),
        }
    }

    /// Sends one request; returns the status and the body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.raw_unbounded(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(self.describe()))?
    }

    async fn raw_unbounded(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let connect_err = |e: std::io::Error| ClientError::Connect {
            addr: self.describe(),
            why: e.to_string(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "netd");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let proto = |e: hyper::Error| ClientError::Protocol(e.to_string());
        let resp = match &self.addr {
            ApiAddr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                send_one(s, req).await.map_err(proto)?
            }
            ApiAddr::Tcp(hp) => {
                let s = tokio::net::TcpStream::connect(hp)
                    .await
                    .map_err(connect_err)?;
                send_one(s, req).await.map_err(proto)?
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(proto)?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request with an optional JSON body and decodes a JSON answer
    /// (`()` for an empty one); an error status becomes [`ClientError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (status, bytes) = self.raw(method, path, body).await?;
        if status >= 400 {
            let mut e: ApiError = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError {
                status,
                error: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()),
                field: None,
            });
            e.status = status;
            return Err(ClientError::Api(e));
        }
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// One HTTP/1.1 request over a fresh connection.
async fn send_one<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    send.send_request(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "unix:///run/shoal/netd.sock".parse::<ApiAddr>().unwrap(),
            ApiAddr::Unix("/run/shoal/netd.sock".into())
        );
        assert_eq!(
            "http://127.0.0.1:7070".parse::<ApiAddr>().unwrap(),
            ApiAddr::Tcp("127.0.0.1:7070".into())
        );
        for bad in ["unix://rel", "http://host", "tcp://1.2.3.4:1", ""] {
            assert!(bad.parse::<ApiAddr>().is_err(), "{bad}");
        }
    }
}
