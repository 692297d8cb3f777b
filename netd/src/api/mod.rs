//! The agent's API: HTTP/JSON, on a unix socket only root can open, and on
//! TCP only when asked for (then every request needs the token).
//!
//! Errors are JSON `{"error": "...", "field": "..."}` with the HTTP status
//! that fits (400 bad input, 404 unknown, 409 conflict, 401 no token, 503
//! store away). Request bodies are parsed here, not by a framework
//! extractor, so a bad body names the field that is wrong.
//!
//! - [`server`]: the routes and the listeners.
//! - [`client`]: what the CLI uses to talk to an agent.

pub mod client;
pub mod server;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::ops::OpError;

/// The default API address.
pub const DEFAULT_API: &str = "unix:///run/shoal/netd.sock";

/// An error as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// What is wrong, naming the item.
    pub error: String,
    /// The request field at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// A 400 about `field`.
    pub fn bad(field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            error: message.into(),
            field: field.map(str::to_string),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        ApiError {
            status: e.status(),
            field: e.field().map(str::to_string),
            error: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

/// Parses a JSON request body, naming the field at fault on error.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad(None, "the request needs a JSON body"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        let inner = e.into_inner();
        let message = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner.to_string(),
        };
        ApiError {
            status: 400,
            error: message,
            field,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NetworkSpec;

    #[test]
    fn bad_bodies_name_the_field() {
        let e =
            parse_body::<NetworkSpec>(br#"{"name":"front","subnet":"10.0.0.0/33"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subnet"), "{e:?}");
        let e = parse_body::<NetworkSpec>(br#"{"name":"front","colour":1}"#).unwrap_err();
        assert!(e.error.contains("colour"), "{e:?}");
        let e = parse_body::<NetworkSpec>(b"{not json").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(parse_body::<NetworkSpec>(b"").is_err());
    }
}
