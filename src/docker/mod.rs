//! The Docker API proxy: receives a client's request, forwards it to the real
//! daemon and streams the answer back.
//!
//! Bodies are never buffered whole here: frames pass through one at a time, so
//! a slow client slows the daemon (back-pressure) and a 20 GB `docker load`
//! costs no memory. Upgraded connections (attach, exec) are handed to
//! [`hijack`] once both sides switched protocols.

pub mod access_log;
pub mod error;
pub mod headers;
pub mod hijack;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use self::access_log::{Counted, Direction, RequestRecord};
use self::error::DockerError;
use self::upstream::UpstreamClient;
use crate::config::Config;
use crate::listen::Peer;

/// Errors carried inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests to the daemon and responses to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What cistern knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub peer: Peer,
}

/// The Docker API proxy shared by every listener.
#[derive(Debug)]
pub struct DockerProxy {
    client: UpstreamClient,
    upstream_name: String,
    /// Hijacked streams run as tasks here so shutdown can wait for them.
    tasks: TaskTracker,
}

impl DockerProxy {
    pub fn new(config: &Config, tasks: TaskTracker) -> Self {
        Self {
            client: upstream::client(&config.upstream),
            upstream_name: config.upstream.endpoint.to_string(),
            tasks,
        }
    }

    /// Handles one request. Never fails: every error becomes a Docker-shaped
    /// JSON response.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let record = RequestRecord::new(
            conn.listener.clone(),
            conn.peer.to_string(),
            req.method().to_string(),
            req.uri().path().to_string(),
        );
        let response = match self.forward(req, &record).await {
            Ok(response) => response,
            Err(err) => {
                match err.side {
                    error::Side::Client => {
                        tracing::info!(listener = %conn.listener, path = %record.path, error = %err.message, "request refused")
                    }
                    _ => {
                        tracing::warn!(listener = %conn.listener, path = %record.path, error = %err.message, "request failed")
                    }
                }
                err.into_response()
            }
        };
        record.set_status(response.status().as_u16());
        let (parts, body) = response.into_parts();
        if body.is_end_stream() {
            record.set_complete();
        }
        let body = Counted::new(body, record, Direction::Out).boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        record: &Arc<RequestRecord>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        let upgrade = headers::wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        parts.uri = daemon_uri(&parts.uri)?;
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        let body = Counted::new(body, record.clone(), Direction::In)
            .map_err(BoxError::from)
            .boxed_unsync();
        let outgoing = Request::from_parts(parts, body);

        let mut response = self.client.request(outgoing).await.map_err(|err| {
            let detail = error_chain(&err);
            if err.is_connect() {
                DockerError::upstream(format!(
                    "cannot connect to the Docker daemon at {}: {detail}",
                    self.upstream_name
                ))
            } else {
                DockerError::upstream(format!("the Docker daemon did not answer: {detail}"))
            }
        })?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(DockerError::upstream(
                    "the Docker daemon switched protocols on a request that did not ask to",
                ));
            };
            let daemon_upgrade = hyper::upgrade::on(&mut response);
            self.tasks.spawn(hijack::splice(
                client_upgrade,
                daemon_upgrade,
                record.clone(),
            ));
            let (mut parts, _) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, true);
            return Ok(Response::from_parts(
                parts,
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ));
        }

        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, false);
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ))
    }
}

/// The URI sent to the daemon: the client's path and query exactly as sent
/// (version prefix included), with cistern's authority.
fn daemon_uri(uri: &Uri) -> Result<Uri, DockerError> {
    let path_and_query = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    if !path_and_query.starts_with('/') {
        return Err(DockerError::client(
            StatusCode::BAD_REQUEST,
            "request target must be an absolute path",
        ));
    }
    Uri::builder()
        .scheme("http")
        .authority(upstream::AUTHORITY)
        .path_and_query(path_and_query)
        .build()
        .map_err(|err| {
            DockerError::client(
                StatusCode::BAD_REQUEST,
                format!("bad request target: {err}"),
            )
        })
}

/// An error with its causes, for messages that say what actually went wrong.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
