//! The Docker API proxy: receives a client's request, forwards it to the real
//! daemon and streams the answer back.
//!
//! The request pipeline, in order (each stage is synchronous and I/O-free,
//! except where the driver here reads or forwards):
//! `route` ([`route::classify`], as dockerd's router would dispatch it) →
//! `headers` ([`policy::Policy::inspect_headers`]) → `authorize` (endpoint
//! group allowed on this listener) → `query` (build, pull, ... parameters) →
//! `[read body whole, capped]` → `inspect/rewrite` (Go-compatible JSON reading,
//! the policy's rules, injections) → `forward` or `hijack` → access log.
//! A refusal ends the pipeline with Docker's JSON error; in audit mode policy
//! refusals are logged and the request goes on.
//!
//! Bodies are never buffered whole here: frames pass through one at a time, so
//! a slow client slows the daemon (back-pressure) and a 20 GB `docker load`
//! costs no memory. Upgraded connections (attach, exec) are handed to
//! [`hijack`] once both sides switched protocols.

pub mod access_log;
pub mod error;
pub mod headers;
pub mod hijack;
pub mod inject;
pub mod ownership;
pub mod policy;
pub mod route;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::access_log::{Counted, Direction, RequestRecord};
use self::error::DockerError;
use self::policy::{BodyNeed, Policy, Refusal, RefusalKind, Verdict};
use self::route::Route;
use self::upstream::UpstreamClient;
use crate::config::{ClientLimits, Config};
use crate::jobs::{Jobs, Opened, SocketConn, Started};
use crate::listen::limit::{ConnectionLimit, Slot};
use crate::listen::Peer;
use crate::mitm::Caching;

/// Errors carried inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests to the daemon and responses to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

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
    /// ([`policy::socket_bind`]).
    pub socket: Option<Arc<std::path::Path>>,
    /// The connection's place among its client's
    /// (`clients.max_connections_per_client`), held by a hijacked stream for
    /// as long as it runs; `None`: over the cap, refused.
    pub slot: Option<Arc<Slot<ClientKey>>>,
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
}

impl DockerProxy {
    pub fn new(
        config: &Config,
        tasks: TaskTracker,
        caching: Option<Arc<Caching>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            client: upstream::client(&config.upstream),
            upstream_name: config.upstream.endpoint.to_string(),
            tasks,
            inject: caching.map(|c| inject::Injector::new(c, &config.listeners)),
            ownership: Arc::new(ownership::Ownership::new(config)),
            jobs: Arc::new(Jobs::new(config)),
            policies: config
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.policy.clone()))
                .collect(),
            shutdown,
            limits: config.clients,
            connections: ConnectionLimit::new(
                config.clients.max_connections_per_client,
                "clients.max_connections_per_client",
            ),
        }
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
    pub fn serve_job(self: &Arc<Self>, serve: crate::jobs::Serve) {
        self.tasks.spawn(crate::server::accept_loop(
            Arc::from(serve.listener.as_str()),
            serve.policy,
            Some(serve.conn),
            crate::server::Bound::Unix(serve.socket),
            self.clone(),
            self.tasks.clone(),
            serve.token,
        ));
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
        crate::jobs::watch(
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
        let daemon = ownership::daemon::Daemon {
            client: &self.client,
        };
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
        let response = match self.forward(req, &conn, &record).await {
            Ok(response) => response,
            Err(err) => {
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
        let (parts, body) = response.into_parts();
        if body.is_end_stream() {
            record.set_complete();
        }
        let body = Counted::new(body, record, Direction::Out).boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }

    async fn forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        record: &Arc<RequestRecord>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        // own, step 1: who is asking (before anything else is looked at).
        let identified = match &conn.fixed {
            Some(fixed) => Ok(fixed.owner.clone()),
            None => self
                .ownership
                .identify(&conn.listener, &conn.peer, req.headers()),
        };
        let owner = match identified {
            Ok(owner) => owner,
            Err(err) => {
                drain(req.into_body()).await;
                return Err(err);
            }
        };
        let policy = &conn.policy;
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        // The stages before the body. A refusal here drains the unread body first.
        let checked = (|| -> Result<(Route, BodyNeed, Option<String>), DockerError> {
            let route = route::classify(req.method(), &target)
                .map_err(|err| DockerError::client(err.status(), err.to_string()))?;
            let refused = |refusal: Refusal| refuse(conn, record, &route, refusal);
            policy
                .inspect_headers(req.headers())
                .map_err(|refusal| refuse_always(conn, record, &route, refusal))?;
            let need = match policy.authorize(&route) {
                Ok(need) => need,
                Err(refusal) => {
                    refused(refusal)?;
                    // Audit mode: forward, still reading bodies that need it.
                    match policy::body_schema(&route.endpoint) {
                        Some(_) => BodyNeed::Inspect {
                            cap: policy.max_body_size,
                        },
                        None => BodyNeed::None,
                    }
                }
            };
            let query = match policy.inspect_query(&route) {
                Ok(query) => query,
                Err(refusal) => {
                    refused(refusal)?;
                    None
                }
            };
            Ok((route, need, query))
        })();
        let (route, need, query) = match checked {
            Ok(checked) => checked,
            Err(err) => {
                drain(req.into_body()).await;
                return Err(err);
            }
        };
        let refused = |refusal: Refusal| refuse(conn, record, &route, refusal);

        let upgrade = headers::wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let target = match query {
            Some(query) => {
                let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
                if query.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{query}")
                }
            }
            None => target,
        };
        let target = match &self.inject {
            Some(inject) => inject.build_target(&conn.listener, &route, target),
            None => target,
        };
        // own, step 2: what the path and query name must be the tenant's.
        let owned = match self
            .ownership
            .resolve(&self.client, &owner, &route, target)
            .await
        {
            Ok(owned) => owned,
            Err(err) => {
                drain(body).await;
                return Err(err);
            }
        };
        parts.uri = daemon_uri(&owned.target)?;
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        // A client's `Authorization` is its credential for cistern (the
        // listener's identity); the daemon never sees it.
        parts.headers.remove(http::header::AUTHORIZATION);
        let body = Counted::new(body, record.clone(), Direction::In);
        let mut injected = None;
        let mut opened = None;
        let body = match need {
            BodyNeed::None => {
                if owned.rewrites_body() {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                }
                owned.guard_body(body.map_err(BoxError::from).boxed_unsync())
            }
            BodyNeed::Inspect { cap } => {
                let raw = read_capped(body, cap).await?;
                // The socket a Docker socket bind gets, if the create has one.
                let planned = match route.endpoint {
                    route::Endpoint::ContainerCreate => Some(self.jobs.plan()?),
                    _ => None,
                };
                let sockets = policy::Sockets {
                    own: conn.socket.as_deref(),
                    to: planned.as_ref().map(|p| p.socket.as_path()),
                };
                let mut socket_mapped = false;
                let forwarded = match policy.judge_body_on(&route, &raw, sockets) {
                    Verdict::Allow(inspected) => {
                        if !inspected.notes.is_empty() {
                            tracing::debug!(path = %record.path, notes = ?inspected.notes, "body rewritten");
                        }
                        socket_mapped = inspected.socket_mapped;
                        inspected.body
                    }
                    Verdict::Refuse {
                        refusal,
                        all,
                        audit_forward,
                    } => match audit_forward {
                        Some(body) if policy.audit && refusal.kind == RefusalKind::Policy => {
                            for r in all {
                                refused(r)?;
                            }
                            body
                        }
                        _ => return Err(refuse_always(conn, record, &route, refusal)),
                    },
                };
                // own, step 3: labels on creates, references inside bodies.
                let forwarded = owned.body(&self.client, &route, forwarded).await?;
                let (forwarded, prepared) = inject::prepare(
                    self.inject.as_ref(),
                    &conn.listener,
                    &route,
                    forwarded,
                    time::OffsetDateTime::now_utc(),
                )?;
                injected = prepared;
                // A job container, or one that binds the Docker socket: a
                // socket of its own, mounted.
                let forwarded = match planned {
                    Some(planned) => {
                        let (started, body) =
                            self.open_socket(planned, conn, &owner, socket_mapped, forwarded)?;
                        opened = started;
                        body
                    }
                    None => forwarded,
                };
                // The daemon reads exactly what cistern validated: fresh framing.
                parts.headers.remove(http::header::CONTENT_LENGTH);
                parts.headers.remove(http::header::TRANSFER_ENCODING);
                if !forwarded.is_empty() {
                    parts.headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    parts
                        .headers
                        .insert(http::header::CONTENT_LENGTH, forwarded.len().into());
                }
                Full::new(forwarded)
                    .map_err(|never| match never {})
                    .boxed_unsync()
            }
        };
        if let Some(prepared) = &mut injected {
            prepared.remember(&parts);
        }
        let outgoing = Request::from_parts(parts, body);

        let answered = self.client.request(outgoing).await.map_err(|err| {
            let detail = error_chain(&err);
            if err.is_connect() {
                DockerError::upstream(format!(
                    "cannot connect to the Docker daemon at {}: {detail}",
                    self.upstream_name
                ))
            } else {
                DockerError::upstream(format!("the Docker daemon did not answer: {detail}"))
            }
        });
        if let (Err(_), Some(reason)) = (&answered, owned.refused()) {
            // cistern cut the request body off (a load's archive).
            return Err(DockerError::client(StatusCode::FORBIDDEN, reason));
        }
        if let Some(opened) = opened {
            // The container exists now, or its socket closes here.
            let created = answered.as_ref().is_ok_and(|r| r.status().is_success());
            self.jobs.settle(&self.client, opened, created).await;
        }
        let mut response = answered?;

        if let (Some(inject), Some(prepared)) = (&self.inject, injected) {
            let response = inject
                .finish_create(&self.client, prepared, response)
                .await?;
            return owned.finish(response).await;
        }

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(DockerError::upstream(
                    "the Docker daemon switched protocols on a request that did not ask to",
                ));
            };
            let daemon_upgrade = hyper::upgrade::on(&mut response);
            // The stream keeps the connection's place while it runs.
            let slot = conn.slot.clone();
            let splice = hijack::splice(client_upgrade, daemon_upgrade, record.clone());
            self.tasks.spawn(async move {
                splice.await;
                drop(slot);
            });
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
        owned
            .finish(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed_unsync(),
            ))
            .await
    }
}

impl DockerProxy {
    /// For a container create: a job rule matches (not inside a job: jobs
    /// do not nest), and the job starts at the planned socket; or the policy
    /// mapped a Docker socket bind to the planned socket, and a socket is
    /// made for this container alone. Either is served at once; returns what
    /// was opened with the body that mounts it.
    fn open_socket(
        self: &Arc<Self>,
        planned: Started,
        conn: &ConnInfo,
        owner: &ownership::labels::Owner,
        socket_mapped: bool,
        body: Bytes,
    ) -> Result<(Option<Opened>, Bytes), DockerError> {
        let in_job = conn.fixed.as_ref().and_then(|f| f.job_rule);
        if in_job.is_none() && !self.jobs.config.rules.is_empty() {
            let value = policy::json::parse(&body).map_err(|r| DockerError::internal(r.message))?;
            if let Some((index, rule)) = self.jobs.config.rule_for(&conn.listener, &value) {
                let (job, serve) = self.jobs.start(
                    planned,
                    index,
                    &conn.listener,
                    owner,
                    &conn.policy,
                    &self.shutdown,
                )?;
                self.serve_job(serve);
                let body = Jobs::mount(value, &job, rule);
                return Ok((Some(Opened::Job(job)), body));
            }
        }
        if !socket_mapped {
            return Ok((None, body));
        }
        let value = policy::json::parse(&body).map_err(|r| DockerError::internal(r.message))?;
        let serve = self.jobs.start_socket(
            &planned,
            &conn.listener,
            owner,
            in_job,
            &conn.policy,
            &self.shutdown,
        )?;
        self.serve_job(serve);
        let body = Jobs::mount_container_socket(value, &planned);
        Ok((Some(Opened::Socket(planned)), body))
    }
}

/// Logs a refusal and turns it into the client's error, unless the listener
/// audits and the refusal is a policy decision: then it is only logged, and
/// the request goes on (`Ok`).
fn refuse(
    conn: &ConnInfo,
    record: &RequestRecord,
    route: &Route,
    refusal: Refusal,
) -> Result<(), DockerError> {
    if conn.policy.audit && refusal.kind == RefusalKind::Policy {
        log_refusal(conn, record, route, &refusal, true);
        return Ok(());
    }
    Err(refuse_always(conn, record, route, refusal))
}

fn refuse_always(
    conn: &ConnInfo,
    record: &RequestRecord,
    route: &Route,
    refusal: Refusal,
) -> DockerError {
    log_refusal(conn, record, route, &refusal, false);
    DockerError {
        status: refusal.status,
        side: error::Side::Client,
        message: refusal.message,
    }
}

/// One structured event per refusal (or, in audit mode, per would-be refusal).
fn log_refusal(
    conn: &ConnInfo,
    record: &RequestRecord,
    route: &Route,
    refusal: &Refusal,
    audit: bool,
) {
    tracing::warn!(
        target: "cistern::policy",
        listener = %conn.listener,
        peer = %conn.peer,
        method = %record.method,
        path = %record.path,
        group = route.group().as_str(),
        policy = %conn.policy.name,
        rule = refusal.rule,
        field = %refusal.field,
        status = refusal.status.as_u16(),
        audit,
        "{}",
        if audit { "would refuse (audit mode: forwarded)" } else { "refused" }
    );
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
