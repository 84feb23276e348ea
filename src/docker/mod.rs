//! The Docker API proxy: receives a client's request, forwards it to the real
//! daemon and streams the answer back.
//!
//! A request goes through named phases on one exchange (`exchange.rs`):
//! `request` (identity, [`crate::wire::route::classify`] as dockerd's
//! router would dispatch it, headers, endpoint group, query; no I/O) →
//! `resolve` (ownership) → `body` (read whole and capped when it must be
//! judged: the policy, ownership, injection and jobs edit one value) →
//! `upstream` → `response` (jobs settle, injection finishes, `hijack`,
//! ownership maps the answer back) → access log. A refusal ends the request
//! with Docker's JSON error; in audit mode the policy decides to log policy
//! refusals and go on.
//!
//! Bodies are never buffered whole here: frames pass through one at a time, so
//! a slow client slows the daemon (back-pressure) and a 20 GB `docker load`
//! costs no memory. Upgraded connections (attach, exec) are handed to
//! [`hijack`] once both sides switched protocols; BuildKit's `/grpc` is
//! relayed call by call under policy ([`crate::buildkit`]). Requests and policy
//! refusals are counted in [`metrics`] for the admin listener.

pub mod access_log;
mod exchange;
pub mod headers;
pub mod hijack;
pub mod listener;
pub mod metrics;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::access_log::{Counted, Direction, RequestRecord};
use crate::daemon::error::DockerError;
use crate::daemon::upstream::{Upstream, UpstreamClient};
use crate::inject;
use crate::listen::limit::ClientLimits;
use crate::listen::limit::{ConnectionLimit, Slot};
use crate::listen::serve::{self, Listener, Socket, Tls};
use crate::listen::Peer;
use crate::policy::Policy;
use crate::tenancy::jobs::{Jobs, SocketConn};
use crate::tenancy::ownership;

use crate::daemon::{client as daemon, error, upstream};
use crate::http::{BoxError, ProxyBody};

/// What cistern knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub peer: Peer,
    /// The policy of the listener the connection came in on.
    pub policy: Arc<Policy>,
    /// Set on a job's or a container's socket: every client is the tenant
    /// fixed when the socket was made.
    pub fixed: Option<Arc<SocketConn>>,
    /// The host path of the unix socket the connection came in on (`None` for
    /// TCP): a bind of it is a bind of the Docker socket
    /// ([`crate::policy::socket_bind`]).
    pub socket: Option<Arc<std::path::Path>>,
    /// The connection's place among its client's
    /// (`clients.max_connections_per_client`), held by a hijacked stream for
    /// as long as it runs; `None`: over the cap, refused.
    pub slot: Option<Arc<Slot<ClientKey>>>,
}

/// The listener, or the job's or container's socket, a connection came in
/// on.
#[derive(Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    /// Its policy.
    pub policy: Arc<Policy>,
    /// Set on a job's or a container's socket: the tenant every client is.
    pub fixed: Option<Arc<SocketConn>>,
}

/// Who counts as one client for `clients.max_connections_per_client`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A user on one unix socket (each job socket is a socket of its own);
    /// `None` when the socket did not say.
    Unix {
        socket: Option<Arc<std::path::Path>>,
        uid: Option<u32>,
    },
    /// An address on TCP.
    Ip(std::net::IpAddr),
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Unix { socket, uid } => {
                match uid {
                    Some(uid) => write!(f, "uid {uid}")?,
                    None => f.write_str("unknown uid")?,
                }
                if let Some(socket) = socket {
                    write!(f, " on {}", socket.display())?;
                }
                Ok(())
            }
            ClientKey::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The Docker API proxy shared by every listener.
#[derive(Debug)]
pub struct DockerProxy {
    client: UpstreamClient,
    upstream_name: String,
    /// Hijacked streams run as tasks here so shutdown can wait for them.
    tasks: TaskTracker,
    /// Cache routing and trust put into containers (with `caching:` only).
    inject: Option<inject::Injector>,
    /// Who owns what: identities, labels, resolution, filters, image state.
    ownership: Arc<ownership::Ownership>,
    /// Per-job sockets.
    jobs: Arc<Jobs>,
    /// Each listener's policy (job sockets served again after a restart).
    policies: std::collections::HashMap<String, Arc<Policy>>,
    /// Fires on shutdown; job sockets close with it.
    shutdown: CancellationToken,
    /// Client connection limits (`clients:`).
    limits: ClientLimits,
    /// Open connections per client, over every listener and job socket.
    connections: Arc<ConnectionLimit<ClientKey>>,
    /// Requests and refusals, for the admin listener.
    metrics: Arc<metrics::DockerMetrics>,
    /// Open BuildKit sessions and their build IDs, by tenant.
    sessions: Arc<crate::tenancy::sessions::Sessions>,
    /// BuildKit builds started over `/grpc`, by tenant.
    buildkit: Arc<crate::buildkit::Registry>,
}

/// What the Docker proxy is built from: the rooms it drives, each built by
/// the server from its own section of the configuration.
pub struct Parts {
    pub upstream: Upstream,
    /// Each listener's policy, by listener name.
    pub policies: std::collections::HashMap<String, Arc<Policy>>,
    pub ownership: ownership::Ownership,
    pub jobs: Jobs,
    /// Cache routing and trust for containers (with `caching:` only).
    pub inject: Option<inject::Injector>,
    pub limits: ClientLimits,
}

impl DockerProxy {
    pub fn new(parts: Parts, tasks: TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            client: upstream::client(&parts.upstream),
            upstream_name: parts.upstream.endpoint.to_string(),
            tasks,
            inject: parts.inject,
            ownership: Arc::new(parts.ownership),
            jobs: Arc::new(parts.jobs),
            policies: parts.policies,
            shutdown,
            limits: parts.limits,
            connections: ConnectionLimit::new(
                parts.limits.max_connections_per_client,
                "clients.max_connections_per_client",
            ),
            metrics: Arc::default(),
            sessions: Arc::default(),
            buildkit: Arc::default(),
        }
    }

    /// Requests and refusals counted so far.
    pub fn metrics(&self) -> &Arc<metrics::DockerMetrics> {
        &self.metrics
    }

    /// The pooled connection to the daemon.
    pub fn upstream(&self) -> &UpstreamClient {
        &self.client
    }

    /// Who owns what.
    pub fn ownership(&self) -> &ownership::Ownership {
        &self.ownership
    }

    /// Job and container sockets.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Client connection limits (`clients:`).
    pub fn limits(&self) -> ClientLimits {
        self.limits
    }

    /// A place for a new connection from `client`, or `None` when it already
    /// holds `clients.max_connections_per_client`.
    pub fn admit(&self, client: ClientKey) -> Option<Slot<ClientKey>> {
        self.connections.admit(client)
    }

    /// Serves a job's or a container's socket until it is closed or cistern
    /// shuts down.
    pub fn serve_job(self: &Arc<Self>, serve: crate::tenancy::jobs::Serve) {
        let listener = ListenerInfo {
            name: Arc::from(serve.listener.as_str()),
            policy: serve.policy,
            fixed: Some(serve.conn),
        };
        let socket = Socket::Unix(serve.socket);
        let proxy = self.clone();
        self.tasks
            .spawn(proxy.serve(listener, socket, None, serve.token));
    }

    /// Serves `socket` (through `tls`, when set) as `listener`'s until
    /// `shutdown` fires; connections run on the proxy's tasks, so shutdown
    /// waits for them ([`listener`] says how they are served).
    pub async fn serve(
        self: Arc<Self>,
        listener: ListenerInfo,
        socket: Socket,
        tls: Option<Tls>,
        shutdown: CancellationToken,
    ) {
        let serving = Listener::new(listener.name.clone(), socket, self.limits.idle_timeout);
        let tasks = self.tasks.clone();
        serve::run(serving.tls(tls), self, listener, tasks, shutdown).await;
    }

    /// Follows job containers and containers with a socket of their own:
    /// ends jobs whose container died or was removed, closes sockets whose
    /// container was removed and, after a restart, serves the sockets of
    /// those still there.
    pub async fn watch_jobs(self: Arc<Self>) {
        let proxy = self.clone();
        let maps_sockets = self
            .policies
            .values()
            .chain(
                self.jobs
                    .config
                    .rules
                    .iter()
                    .filter_map(|r| r.policy.as_ref()),
            )
            .any(|p| !p.socket_binds.is_empty());
        crate::tenancy::jobs::watch(
            self.jobs.clone(),
            self.client.clone(),
            maps_sockets,
            |listener| self.policies.get(listener).cloned(),
            move |serve| proxy.serve_job(serve),
            self.shutdown.clone(),
        )
        .await;
    }

    /// Removes the resources of the tenants of `cleanup: true` listeners.
    pub async fn cleanup_on_shutdown(&self) {
        self.remove_tenants(self.ownership.cleanup_tenants(), "shutdown")
            .await;
    }

    /// At start: tenants of `cleanup: true` listeners that a crashed run did
    /// not clean up are reaped now (`orphans: reap`) or adopted, to go at
    /// this run's shutdown (`orphans: adopt`, the default).
    pub async fn reconcile_orphans(&self, reap: bool) {
        let orphans = self.ownership.orphans();
        if orphans.is_empty() {
            return;
        }
        if reap {
            self.remove_tenants(orphans, "orphans of an earlier run")
                .await;
        } else {
            let names: Vec<String> = orphans.iter().map(|o| o.tenant.to_string()).collect();
            tracing::info!(target: "cistern::ownership", tenants = ?names, "orphans of an earlier run adopted: removed at shutdown");
        }
    }

    async fn remove_tenants(&self, owners: Vec<ownership::labels::Owner>, when: &str) {
        let daemon = daemon::Daemon::new(&self.client);
        let mut done = Vec::new();
        for owner in owners {
            match ownership::cleanup::remove_tenant(daemon, self.ownership.store(), &owner).await {
                Ok(removed) if removed.errors.is_empty() => {
                    tracing::info!(target: "cistern::ownership", tenant = %owner.tenant, %removed, when, "tenant's resources removed");
                    done.push(owner.tenant);
                }
                Ok(removed) => {
                    tracing::error!(target: "cistern::ownership", tenant = %owner.tenant, %removed, errors = ?removed.errors, when, "some of the tenant's resources could not be removed");
                }
                Err(err) => {
                    tracing::error!(target: "cistern::ownership", tenant = %owner.tenant, error = %err.message, when, "cleanup failed");
                }
            }
        }
        self.ownership.cleaned(&done);
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
        let session = buildkit_session(&req);
        let response = match self.forward(req, &conn, &record).await {
            Ok(response) => response,
            Err(err) => {
                if let Some(session) = &session {
                    // The docker CLI (20.10) sends a BuildKit build while
                    // its session is still on its way; a build that fails
                    // before the session is up leaves the CLI serving that
                    // session forever (its close comes before its start).
                    // The refusal waits for the session, as the daemon's
                    // build does.
                    self.sessions
                        .wait_open(session, crate::tenancy::sessions::OPEN_WAIT)
                        .await;
                }
                match err.side {
                    error::Side::Client | error::Side::AsDaemon => {
                        tracing::info!(listener = %conn.listener, path = %record.path, error = %err.message, "request refused")
                    }
                    _ => {
                        tracing::warn!(listener = %conn.listener, path = %record.path, error = %err.message, "request failed")
                    }
                }
                let unauthorized = err.status == StatusCode::UNAUTHORIZED;
                let mut response = err.into_response();
                if unauthorized {
                    response.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static(self.ownership.challenge(&conn.listener)),
                    );
                }
                response
            }
        };
        record.set_status(response.status().as_u16());
        self.metrics
            .request(record.group(), response.status().as_u16());
        let (parts, body) = response.into_parts();
        if body.is_end_stream() {
            record.set_complete();
        }
        let body = Counted::new(body, record, Direction::Out).boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }
}

/// At most this much of a refused request's body is read and discarded, for at
/// most [`DRAIN_TIMEOUT`].
const DRAIN_LIMIT: usize = 16 << 20;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards the body of a request refused before its body was read.
/// Answering and closing while the client is still sending (the build context
/// of a refused `docker build --network host`) makes the client's write fail,
/// and the docker CLI then reports a broken pipe instead of cistern's message.
/// dockerd's Go server likewise reads an unread body before closing.
async fn drain(mut body: Incoming) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// Reads a whole request body, at most `cap` bytes: beyond it, 413.
async fn read_capped<B>(body: B, cap: usize) -> Result<Bytes, DockerError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match http_body_util::Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(DockerError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the {cap} bytes this listener accepts"),
        )),
        Err(err) => Err(DockerError::client(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )),
    }
}

/// The URI sent to the daemon: the client's path and query as sent (version
/// prefix included; the query possibly rewritten by the policy), with
/// cistern's authority.
fn daemon_uri(path_and_query: &str) -> Result<Uri, DockerError> {
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

/// The session a BuildKit build (`POST /build?version=2&session=<id>`)
/// names, if the request is one.
fn buildkit_session(req: &Request<Incoming>) -> Option<String> {
    if req.method() != http::Method::POST || !req.uri().path().ends_with("/build") {
        return None;
    }
    let q = crate::wire::query::Query::parse(req.uri().query()?).ok()?;
    if q.values("version").next() != Some("2") {
        return None;
    }
    let session = q.values("session").next().filter(|s| !s.is_empty())?;
    Some(session.to_owned())
}
