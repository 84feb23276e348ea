//! cistern's own calls to the Docker daemon, on the pooled upstream client:
//! the inspects and listings ownership resolves names with, the volumes and
//! tags it creates, cleanup's removals, injection's archive reads and writes,
//! the job watcher's listings and event stream.
//!
//! One typed client for all of them: answers are read whole, with a cap,
//! and every failure is a [`DockerError`] that says which side failed (a
//! request cistern cannot build is internal, anything the daemon did or did
//! not do is upstream). What an answer means is the caller's to decide: a
//! `404` is an answer, not an error. Not for forwarding a client's request:
//! that streams, and is [`crate::docker`]'s.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;

use super::error::DockerError;
use super::upstream::{self, CallError, UpstreamClient};

pub use super::upstream::Answer;

/// Largest answer read back by default (listings of a busy daemon fit easily).
pub const MAX_ANSWER: usize = 64 << 20;

/// The daemon, reached with cistern's client.
#[derive(Clone, Copy)]
pub struct Daemon<'a> {
    client: &'a UpstreamClient,
    /// Largest answer read back.
    cap: usize,
}

impl std::fmt::Debug for Daemon<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("cap", &self.cap).finish()
    }
}

impl<'a> Daemon<'a> {
    /// The daemon behind `client`, answers capped at [`MAX_ANSWER`].
    pub fn new(client: &'a UpstreamClient) -> Daemon<'a> {
        Daemon {
            client,
            cap: MAX_ANSWER,
        }
    }

    /// The same daemon with answers capped at `cap` bytes.
    pub fn capped(self, cap: usize) -> Daemon<'a> {
        Daemon { cap, ..self }
    }

    /// The pooled client (for work that outlives the borrow, e.g. a task).
    pub fn client(&self) -> &'a UpstreamClient {
        self.client
    }

    /// `GET`.
    pub async fn get(&self, path_and_query: &str) -> Result<Answer, DockerError> {
        self.send(Method::GET, path_and_query, None, Bytes::new())
            .await
    }

    /// `HEAD`.
    pub async fn head(&self, path_and_query: &str) -> Result<Answer, DockerError> {
        self.send(Method::HEAD, path_and_query, None, Bytes::new())
            .await
    }

    /// `DELETE`.
    pub async fn delete(&self, path_and_query: &str) -> Result<Answer, DockerError> {
        self.send(Method::DELETE, path_and_query, None, Bytes::new())
            .await
    }

    /// `POST` without a body.
    pub async fn post(&self, path_and_query: &str) -> Result<Answer, DockerError> {
        self.send(Method::POST, path_and_query, None, Bytes::new())
            .await
    }

    /// `POST` with a JSON body.
    pub async fn post_json(
        &self,
        path_and_query: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, DockerError> {
        let body = Bytes::from(body.to_string());
        self.send(Method::POST, path_and_query, Some("application/json"), body)
            .await
    }

    /// `PUT` with a body of `content_type`.
    pub async fn put(
        &self,
        path_and_query: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Answer, DockerError> {
        self.send(Method::PUT, path_and_query, Some(content_type), body)
            .await
    }

    /// A `GET` whose answer must be `200` with a JSON body (a listing):
    /// another status is an upstream error `<refused>: <the daemon's message>`.
    pub async fn get_json(
        &self,
        path_and_query: &str,
        refused: &str,
    ) -> Result<serde_json::Value, DockerError> {
        let answer = self.get(path_and_query).await?;
        if answer.status != StatusCode::OK {
            return Err(DockerError::upstream(format!(
                "{refused}: {}",
                answer.message()
            )));
        }
        json(&answer)
    }

    /// A `GET` whose answer is read as it streams (the event stream): the
    /// status and the body.
    pub async fn stream(
        &self,
        path_and_query: &str,
    ) -> Result<(StatusCode, Incoming), DockerError> {
        upstream::stream(self.client, path_and_query)
            .await
            .map_err(error)
    }

    /// Sends one request and reads the whole answer.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, DockerError> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if !body.is_empty() {
            headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        upstream::call(self.client, method, path_and_query, headers, body, self.cap)
            .await
            .map_err(error)
    }
}

/// An answer's JSON body.
pub fn json(answer: &Answer) -> Result<serde_json::Value, DockerError> {
    serde_json::from_slice(&answer.body)
        .map_err(|err| DockerError::upstream(format!("unreadable daemon answer: {err}")))
}

/// A request cistern cannot build is its own failure; the rest is the
/// daemon's.
fn error(err: CallError) -> DockerError {
    match err {
        CallError::Request(_) => DockerError::internal(err.to_string()),
        _ => DockerError::upstream(err.to_string()),
    }
}
