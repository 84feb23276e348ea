//! Errors as a Docker client expects them: a JSON body `{"message": "..."}`
//! with the status code dockerd would use, so the CLI prints the sentence.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::http::ProxyBody;

/// Which side of the proxy a request-path error comes from. It decides the
/// status code and how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something cistern refuses or cannot read.
    Client,
    /// The daemon could not be reached or broke the exchange.
    Upstream,
    /// cistern itself failed.
    Internal,
    /// An answer in the daemon's own words, without the `cistern:` prefix:
    /// a resource another tenant owns is answered as dockerd answers for a
    /// missing one (`No such container: x`).
    AsDaemon,
}

/// An error answered to a Docker client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DockerError {
    pub status: StatusCode,
    pub side: Side,
    pub message: String,
}

impl DockerError {
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            side: Side::Client,
            message: message.into(),
        }
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            side: Side::Upstream,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            side: Side::Internal,
            message: message.into(),
        }
    }

    /// The response dockerd would send for this error.
    pub fn into_response(self) -> Response<ProxyBody> {
        if self.side == Side::AsDaemon {
            return verbatim_error(self.status, &self.message);
        }
        json_error(self.status, &self.message)
    }
}

/// Builds `{"message": "..."}` exactly as given, as dockerd words it.
pub fn verbatim_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec(&serde_json::json!({ "message": message }))
        .unwrap_or_else(|_| b"{\"message\":\"error\"}".to_vec());
    body.push(b'\n');
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Builds `{"message": "cistern: ..."}` with the given status.
pub fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    if message.starts_with("cistern: ") {
        verbatim_error(status, message)
    } else {
        verbatim_error(status, &format!("cistern: {message}"))
    }
}
