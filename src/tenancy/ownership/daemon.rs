//! The daemon calls ownership makes on cistern's pooled upstream client:
//! inspects to resolve names, label-filtered listings, volume creation and
//! removals for cleanup. Answers are small and read whole, with a cap.

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::docker::error::DockerError;
use crate::docker::upstream::{self, CallError, UpstreamClient};

/// Largest answer read back (listings of a busy daemon fit easily).
pub const MAX_ANSWER: usize = 64 << 20;

/// The daemon, reached with cistern's client.
#[derive(Clone, Copy)]
pub struct Daemon<'a> {
    pub client: &'a UpstreamClient,
}

pub use crate::docker::upstream::Answer;

/// The answer's JSON body.
pub fn json(answer: &Answer) -> Result<serde_json::Value, DockerError> {
    serde_json::from_slice(&answer.body)
        .map_err(|err| DockerError::upstream(format!("unreadable daemon answer: {err}")))
}

impl Daemon<'_> {
    /// Sends one request (JSON body if any) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, DockerError> {
        let mut headers = HeaderMap::new();
        let body = match body {
            Some(b) => {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        upstream::call(
            self.client,
            method,
            path_and_query,
            headers,
            body,
            MAX_ANSWER,
        )
        .await
        .map_err(|err| match err {
            CallError::Request(_) => DockerError::internal(err.to_string()),
            _ => DockerError::upstream(err.to_string()),
        })
    }

    pub async fn get(&self, path_and_query: &str) -> Result<Answer, DockerError> {
        self.send(Method::GET, path_and_query, None).await
    }
}
