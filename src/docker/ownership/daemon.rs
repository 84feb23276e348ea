//! The daemon calls ownership makes on cistern's pooled upstream client:
//! inspects to resolve names, label-filtered listings, volume creation and
//! removals for cleanup. Answers are small and read whole, with a cap.

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use crate::docker::error::DockerError;
use crate::docker::upstream::{UpstreamClient, AUTHORITY};
use crate::docker::BoxError;

/// Largest answer read back (listings of a busy daemon fit easily).
pub const MAX_ANSWER: usize = 64 << 20;

/// The daemon, reached with cistern's client.
#[derive(Clone, Copy)]
pub struct Daemon<'a> {
    pub client: &'a UpstreamClient,
}

/// An answer read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The daemon's `{"message": ...}`, or the status.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| self.status.to_string())
    }

    pub fn json(&self) -> Result<serde_json::Value, DockerError> {
        serde_json::from_slice(&self.body)
            .map_err(|err| DockerError::upstream(format!("unreadable daemon answer: {err}")))
    }
}

impl Daemon<'_> {
    /// Sends one request (JSON body if any) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, DockerError> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(AUTHORITY)
            .path_and_query(path_and_query)
            .build()
            .map_err(|err| DockerError::internal(format!("bad daemon URI: {err}")))?;
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(b) => {
                req = req
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, b.len());
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|err| DockerError::internal(format!("bad daemon request: {err}")))?;
        let response = self.client.request(req).await.map_err(|err| {
            DockerError::upstream(format!("the Docker daemon did not answer: {err}"))
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|err: BoxError| {
                DockerError::upstream(format!("reading the daemon's answer: {err}"))
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            body,
        })
    }

    pub async fn get(&self, path_and_query: &str) -> Result<Answer, DockerError> {
        self.send(Method::GET, path_and_query, None).await
    }
}
