//! The admin listener: cistern's own, whether or not caching is on, on
//! loopback TCP (`127.0.0.1:9477` by default) or a unix socket (`admin:`;
//! `admin: none` turns it off). It serves, read-only:
//!
//! - `/healthz`: the process answers;
//! - `/readyz`: the daemon answers `_ping`, the cache directory is
//!   writable, a CA is valid ([`ready`]); 503 with what failed;
//! - `/metrics`: Prometheus text ([`metrics`]);
//! - `/api/v1/...`: JSON ([`api`]), described by the OpenAPI document at
//!   `/api/v1/openapi.json`;
//! - `/`: the status page ([`page`]), drawn from the JSON API.
//!
//! It sits above every room it shows (ownership and jobs, the Docker
//! proxy's counters, the caching proxy's, the CA store) and below the
//! server, which builds it; none of them imports it. It shows tenant names
//! and their resources, never bodies, credentials or environments: hence
//! loopback, or a unix socket of mode 0600, by default. Connections are
//! served by the one accept loop ([`crate::listen::serve`]).

pub mod api;
pub mod client;
pub mod config;
pub mod history;
pub mod metrics;
pub mod page;
pub mod ready;

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::config::AdminConfig;
use self::history::History;
use self::metrics::Exposition;
use crate::docker::DockerProxy;
use crate::listen::serve::{self, Accepted, Listener, Service, Socket};
use crate::listen::{ListenError, Peer};
use crate::mitm::proxy::Running;
use crate::mitm::Caching;

/// How long an admin connection may sit idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every path the admin listener answers (`GET`); the OpenAPI document
/// describes exactly these.
pub const ROUTES: [&str; 11] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/tenants",
    "/api/v1/sockets",
    "/api/v1/cache",
    "/api/v1/cache/history",
    "/api/v1/cas",
    "/api/v1/refusals",
];

/// The OpenAPI 3 document of [`ROUTES`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the admin listener shows: built by the server from the running
/// rooms.
pub struct Parts {
    /// This cistern's `instance` (ownership labels).
    pub instance: String,
    pub docker: Arc<DockerProxy>,
    /// With `caching:` only.
    pub caching: Option<(Arc<Caching>, Running)>,
}

/// The admin service.
pub struct Admin {
    parts: Parts,
    exposition: Exposition,
    history: Mutex<History>,
}

/// Binds the admin listener's socket (at start, with the others, so that a
/// port in use stops cistern before it serves anything).
pub async fn bind(config: &AdminConfig) -> Result<Socket, ListenError> {
    match config {
        AdminConfig::Unix(unix) => Ok(Socket::Unix(crate::listen::bind_unix("admin", unix)?)),
        AdminConfig::Tcp(address) => tokio::net::TcpListener::bind(address)
            .await
            .map(Socket::Tcp)
            .map_err(|source| ListenError::Io {
                listener: "admin".into(),
                what: "cannot bind",
                target: address.to_string(),
                source,
            }),
    }
}

/// Serves `socket` until `shutdown` fires, and samples the cache's history
/// meanwhile; both run on `tasks`.
pub fn start(socket: Socket, parts: Parts, tasks: &TaskTracker, shutdown: CancellationToken) {
    let (caching, running) = match &parts.caching {
        Some((caching, running)) => (Some(caching.clone()), Some(running.clone())),
        None => (None, None),
    };
    let exposition = Exposition::new(parts.docker.metrics(), running, caching);
    let admin = Arc::new(Admin {
        parts,
        exposition,
        history: Mutex::new(History::default()),
    });
    match &socket {
        Socket::Tcp(l) => tracing::info!(address = ?l.local_addr().ok(), "admin listening"),
        Socket::Unix(s) => tracing::info!(path = %s.path().display(), "admin listening"),
    }
    tasks.spawn(sample(admin.clone(), shutdown.clone()));
    tasks.spawn(serve::run(
        Listener::new("admin", socket, IDLE_TIMEOUT),
        admin,
        (),
        tasks.clone(),
        shutdown,
    ));
}

/// Takes a sample of the cache's totals every [`history::PERIOD`].
async fn sample(admin: Arc<Admin>, shutdown: CancellationToken) {
    if admin.parts.caching.is_none() {
        return;
    }
    loop {
        let sample = api::cache_sample(&admin.parts);
        admin.history().push(sample);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(history::PERIOD) => {}
        }
    }
}

impl Admin {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one `GET`.
    async fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let parts = &self.parts;
        match path {
            "/" => page::response(),
            "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            "/readyz" => {
                let report = ready::check(parts).await;
                let status = match report.ready() {
                    true => StatusCode::OK,
                    false => StatusCode::SERVICE_UNAVAILABLE,
                };
                json(status, &report.to_json())
            }
            "/metrics" => {
                api::set_gauges(parts, &self.exposition.gauges).await;
                text(
                    StatusCode::OK,
                    metrics::CONTENT_TYPE,
                    self.exposition.render(),
                )
            }
            "/api/v1/openapi.json" => text(StatusCode::OK, "application/json", OPENAPI.into()),
            "/api/v1/tenants" => match api::tenants(parts).await {
                Ok(value) => json(StatusCode::OK, &value),
                Err(message) => error(StatusCode::BAD_GATEWAY, &message),
            },
            "/api/v1/sockets" => match api::sockets(parts) {
                Ok(value) => json(StatusCode::OK, &value),
                Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
            },
            "/api/v1/cache" => json(StatusCode::OK, &api::cache(parts)),
            "/api/v1/cache/history" => {
                let samples: Vec<_> = self.history().samples().copied().collect();
                json(StatusCode::OK, &api::history(parts, samples))
            }
            "/api/v1/cas" => json(StatusCode::OK, &api::cas(parts)),
            "/api/v1/refusals" => json(StatusCode::OK, &api::refusals(parts)),
            _ => error(StatusCode::NOT_FOUND, &format!("no such path: {path}")),
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", format!("{value}\n"))
}

/// A JSON error, shaped as cistern's Docker errors are.
fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "message": format!("cistern: {message}") }),
    )
}

impl Service for Admin {
    type Site = ();
    type Slot = ();
    type Conn = ();
    type Body = Full<Bytes>;
    type Plain = TcpStream;

    fn admit(&self, _peer: &Peer, _socket: Option<&Arc<Path>>) -> Option<()> {
        Some(())
    }

    fn plain(stream: TcpStream) -> TcpStream {
        stream
    }

    fn connect(&self, _site: &(), _conn: Accepted<()>) -> Option<()> {
        Some(())
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _conn: Arc<()>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(match *req.method() {
            Method::GET | Method::HEAD => self.answer(req.uri().path()).await,
            _ => {
                let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "the admin API is read-only");
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                res
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every routed path is documented, and every documented path routed.
    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let documented: std::collections::BTreeSet<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let routed: std::collections::BTreeSet<&str> = ROUTES.into_iter().collect();
        assert_eq!(documented, routed);
        for (path, item) in doc["paths"].as_object().unwrap() {
            assert!(
                item["get"]["responses"]["200"].is_object(),
                "{path}: GET 200"
            );
        }
    }
}
