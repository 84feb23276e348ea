//! One request's way through the Docker proxy, as named phases sharing one
//! [`Exchange`] (in the spirit of pingora's `ProxyHttp`):
//!
//! 1. [`DockerProxy::request_phase`], before the body, no I/O: who is asking
//!    (identity, or the socket's fixed tenant), what they ask for (route),
//!    whether they may (headers, endpoint group, query), and the target with
//!    the query as the policy and injection left it. A refusal here drains
//!    the unread body first.
//!    A BuildKit `/session` hijack binds its ID to the tenant here.
//! 2. [`DockerProxy::session_phase`]: a build may name only the tenant's
//!    own BuildKit session and build ID, a build cancel only its own build
//!    ([`crate::tenancy::sessions`]).
//! 3. [`DockerProxy::resolve_phase`]: what the path and query name must be
//!    the tenant's (ownership asks the daemon).
//! 4. [`DockerProxy::body_phase`]: bodies that need it are read whole
//!    (capped), judged by the policy, then edited by ownership (labels,
//!    references), injection (cache routing and trust) and jobs (a job's or
//!    a container's own socket), and framed afresh; the others stream
//!    through ownership's guards.
//! 5. [`DockerProxy::upstream_phase`]: the request goes to the daemon.
//! 6. [`DockerProxy::response_phase`]: jobs and container sockets settle,
//!    injection finishes a create, an upgrade becomes a [`hijack`], and
//!    ownership maps the answer back for the tenant.
//!
//! The access log (the last phase) wraps all of this in
//! [`DockerProxy::handle`]. Each phase's default is to pass the request on
//! unchanged: a listener without policy rules, ownership or injection
//! forwards what the client sent.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::access_log::{Counted, Direction, RequestRecord};
use super::metrics::{group_of, DockerMetrics, RefusalEvent};
use super::{daemon_uri, drain, headers, hijack, read_capped};
use super::{ConnInfo, DockerProxy};
use crate::daemon::error::DockerError;
use crate::http::error::chain;
use crate::http::{BoxError, ProxyBody};
use crate::inject;
use crate::policy::{self, BodyNeed, Refusal, RefusalKind, Verdict};
use crate::tenancy::jobs::Opened;
use crate::tenancy::ownership::labels::Owner;
use crate::tenancy::ownership::owned::Owned;
use crate::tenancy::sessions::{self, SessionGuard};
use crate::wire::route::{self, Route};

/// What one request learned on its way through the phases.
pub(super) struct Exchange<'a> {
    pub conn: &'a ConnInfo,
    /// Where refusals are counted.
    pub metrics: &'a DockerMetrics,
    pub record: &'a Arc<RequestRecord>,
    /// Who is asking.
    pub owner: Owner,
    pub route: Route,
    /// Whether the body is read and judged.
    pub need: BodyNeed,
    /// The path and query to forward, before ownership resolves it.
    pub target: String,
    /// The client's side of an upgrade it asked for (attach, exec).
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Cache routing and trust prepared for a container create.
    pub injected: Option<inject::Prepared>,
    /// A job's or a container's own socket opened for a create.
    pub opened: Option<Opened>,
    /// A BuildKit session bound to the tenant while its hijack is open.
    pub session: Option<SessionGuard>,
}

impl Exchange<'_> {
    /// A refusal, as the listener's policy decides it: logged and forwarded
    /// when it only audits (`Ok`), the client's error otherwise.
    fn refused(&self, refusal: Refusal) -> Result<(), DockerError> {
        match self.conn.policy.decide(refusal) {
            policy::Decision::Audit(refusal) => {
                self.note_refusal(&refusal, true);
                Ok(())
            }
            policy::Decision::Refuse(refusal) => Err(self.refuse(refusal)),
        }
    }

    /// A refusal that ends the request whatever the policy's mode.
    fn refuse(&self, refusal: Refusal) -> DockerError {
        self.note_refusal(&refusal, false);
        DockerError::client(refusal.status, refusal.message)
    }

    /// Logs a refusal and counts it for the admin listener.
    fn note_refusal(&self, refusal: &Refusal, audit: bool) {
        log_refusal(self.conn, self.record, &self.route, refusal, audit);
        self.metrics.refusal(RefusalEvent {
            time: time::OffsetDateTime::now_utc(),
            tenant: self.owner.tenant.to_string(),
            listener: self.conn.listener.to_string(),
            rule: refusal.rule,
            method: self.record.method.clone(),
            path: self.record.path.clone(),
            status: refusal.status.as_u16(),
            audit,
        });
    }
}

impl DockerProxy {
    /// Counts the refusals of a `/grpc` connection's calls like the
    /// Docker API's (`cistern_policy_refusals_total`, the latest refusals).
    fn grpc_refusals(&self, tenant: String, listener: String) -> crate::buildkit::OnRefusal {
        let metrics = self.metrics.clone();
        crate::buildkit::OnRefusal(Arc::new(
            move |path: &str, rule: &'static str, audit: bool| {
                metrics.refusal(RefusalEvent {
                    time: time::OffsetDateTime::now_utc(),
                    tenant: tenant.clone(),
                    listener: listener.clone(),
                    rule,
                    method: "POST".into(),
                    path: format!("/grpc {path}"),
                    // gRPC answers 200 with its own status (PERMISSION_DENIED).
                    status: 200,
                    audit,
                })
            },
        ))
    }

    /// Phase 1 (no I/O): identity, route, headers, endpoint group and query.
    pub(super) fn request_phase<'a>(
        &'a self,
        req: &mut Request<Incoming>,
        conn: &'a ConnInfo,
        record: &'a Arc<RequestRecord>,
    ) -> Result<Exchange<'a>, DockerError> {
        // Who is asking, before anything else is looked at.
        let owner = match &conn.fixed {
            Some(fixed) => fixed.owner.clone(),
            None => self
                .ownership
                .identify(&conn.listener, &conn.peer, req.headers())?,
        };
        let policy = &conn.policy;
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let route = route::classify(req.method(), &target)
            .map_err(|err| DockerError::client(err.status(), err.to_string()))?;
        record.set_group(group_of(&route.endpoint));
        let mut ex = Exchange {
            conn,
            metrics: &self.metrics,
            record,
            owner,
            route,
            need: BodyNeed::None,
            target,
            client_upgrade: None,
            injected: None,
            opened: None,
            session: None,
        };
        policy
            .inspect_headers(req.headers())
            .map_err(|refusal| ex.refuse(refusal))?;
        ex.need = match policy.authorize(&ex.route) {
            Ok(need) => need,
            Err(refusal) => {
                ex.refused(refusal)?;
                // Audit mode: forward, still reading bodies that need it.
                match policy::body_schema(&ex.route.endpoint) {
                    Some(_) => BodyNeed::Inspect {
                        cap: policy.max_body_size,
                    },
                    None => BodyNeed::None,
                }
            }
        };
        let query = match policy.inspect_query(&ex.route) {
            Ok(query) => query,
            Err(refusal) => {
                ex.refused(refusal)?;
                None
            }
        };
        if let Some(query) = query {
            let path = ex
                .target
                .split_once('?')
                .map_or(ex.target.as_str(), |(p, _)| p);
            ex.target = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
        }
        ex.session = self.bind_session(req.headers(), &ex)?;
        if let Some(inject) = &self.inject {
            ex.target =
                inject.build_target(&conn.listener, &ex.route, std::mem::take(&mut ex.target));
        }
        if headers::wants_upgrade(req.headers()) {
            ex.client_upgrade = Some(hyper::upgrade::on(req));
        }
        Ok(ex)
    }

    /// A `/session` hijack binds its ID to the tenant
    /// ([`crate::tenancy::sessions`]) until it ends.
    fn bind_session(
        &self,
        headers: &http::HeaderMap,
        ex: &Exchange<'_>,
    ) -> Result<Option<SessionGuard>, DockerError> {
        match ex.route.endpoint {
            route::Endpoint::Session => {
                let id = sessions::id_in(headers);
                let guard = self.sessions.open(&ex.owner, id)?;
                tracing::debug!(tenant = %ex.owner.tenant, session = id, "BuildKit session opened");
                Ok(Some(guard))
            }
            _ => Ok(None),
        }
    }

    /// A build may name only the tenant's own session (waiting for it to
    /// open, as the daemon does) and build ID; a cancel only its own build.
    pub(super) async fn session_phase(&self, ex: &Exchange<'_>) -> Result<(), DockerError> {
        let read = |key: &str| -> Result<String, DockerError> {
            let q = crate::wire::query::Query::parse(&ex.route.query)
                .map_err(|r| DockerError::client(r.status, r.message))?;
            q.get(key)
                .map(|v| v.unwrap_or("").to_string())
                .map_err(|r| DockerError::client(r.status, r.message))
        };
        match ex.route.endpoint {
            route::Endpoint::Build => {
                let (session, build_id) = (read("session")?, read("buildid")?);
                if !session.is_empty() {
                    self.sessions
                        .build(&ex.owner, &session, &build_id, sessions::OPEN_WAIT)
                        .await
                } else if !build_id.is_empty() {
                    Err(DockerError::client(
                        StatusCode::FORBIDDEN,
                        "cistern: a build ID needs the client's own BuildKit session",
                    ))
                } else {
                    Ok(())
                }
            }
            route::Endpoint::BuildCancel => self.sessions.cancel(&ex.owner, &read("id")?),
            _ => Ok(()),
        }
    }

    /// Phase 2: what the path and query name must be the tenant's.
    pub(super) async fn resolve_phase(&self, ex: &Exchange<'_>) -> Result<Owned, DockerError> {
        self.ownership
            .resolve(&self.client, &ex.owner, &ex.route, ex.target.clone())
            .await
    }

    /// Phase 3: the request's head and body as the daemon gets them.
    pub(super) async fn body_phase(
        self: &Arc<Self>,
        ex: &mut Exchange<'_>,
        owned: &Owned,
        parts: &mut http::request::Parts,
        body: Incoming,
    ) -> Result<ProxyBody, DockerError> {
        parts.uri = daemon_uri(&owned.target)?;
        headers::strip_hop_by_hop(&mut parts.headers, ex.client_upgrade.is_some());
        crate::tenancy::ownership::identity::strip_credentials(&mut parts.headers);
        let body = Counted::new(body, ex.record.clone(), Direction::In);
        let cap = match ex.need {
            BodyNeed::None => {
                if owned.rewrites_body() {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                }
                return Ok(owned.guard_body(body.map_err(BoxError::from).boxed_unsync()));
            }
            BodyNeed::Inspect { cap } => cap,
        };
        let raw = read_capped(body, cap).await?;
        let forwarded = self.edit_body(ex, owned, &raw).await?;
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
        if let Some(prepared) = &mut ex.injected {
            prepared.remember(parts);
        }
        Ok(Full::new(forwarded)
            .map_err(|never| match never {})
            .boxed_unsync())
    }

    /// The edits of a body read whole: policy, ownership, injection, jobs.
    async fn edit_body(
        self: &Arc<Self>,
        ex: &mut Exchange<'_>,
        owned: &Owned,
        raw: &[u8],
    ) -> Result<Bytes, DockerError> {
        let conn = ex.conn;
        // The socket a Docker socket bind gets, if the create has one.
        let planned = match ex.route.endpoint {
            route::Endpoint::ContainerCreate => Some(self.jobs.plan()?),
            _ => None,
        };
        let docker_host = std::path::Path::new(crate::tenancy::jobs::SOCKET_PATH_INSIDE);
        let sockets = policy::Sockets {
            own: conn.socket.as_deref(),
            seen_at: conn.fixed.is_some().then_some(docker_host),
            to: planned.as_ref().map(|p| p.socket.as_path()),
        };
        let (mut body, socket_mapped) = match conn.policy.judge_body_on(&ex.route, raw, sockets) {
            Verdict::Allow(inspected) => {
                if !inspected.notes.is_empty() {
                    tracing::debug!(path = %ex.record.path, notes = ?inspected.notes, "body rewritten");
                }
                (inspected.body, inspected.socket_mapped)
            }
            Verdict::Refuse {
                refusal,
                all,
                audit_forward,
            } => match audit_forward {
                Some(body) if conn.policy.audit && refusal.kind == RefusalKind::Policy => {
                    for r in all {
                        ex.refused(r)?;
                    }
                    (body, false)
                }
                _ => return Err(ex.refuse(refusal)),
            },
        };
        // One value, edited in place by each stage, serialised once below.
        owned.body(&self.client, &ex.route, &mut body).await?;
        if let Some(inject) = &self.inject {
            let daemon = crate::daemon::client::Daemon::new(&self.client);
            inject
                .learn_for_create(daemon, &conn.listener, &ex.route, &body)
                .await;
        }
        ex.injected = inject::prepare(
            self.inject.as_ref(),
            &conn.listener,
            &ex.route,
            &mut body,
            time::OffsetDateTime::now_utc(),
        )?;
        if let Some(planned) = planned {
            // A job container, or one that binds the Docker socket: a socket
            // of its own, mounted.
            let opened = self.jobs.open(
                planned,
                crate::tenancy::jobs::Opener {
                    listener: &conn.listener,
                    owner: &ex.owner,
                    fixed: conn.fixed.as_deref(),
                    policy: &conn.policy,
                    socket_mapped,
                },
                &mut body,
                &self.shutdown,
            )?;
            if let Some(serve) = opened.serve {
                self.serve_job(serve);
            }
            ex.opened = opened.opened;
        }
        Ok(body.into_bytes())
    }

    /// Phase 4: the daemon's answer, or why there is none.
    pub(super) async fn upstream_phase(
        &self,
        outgoing: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, DockerError> {
        self.client.request(outgoing).await.map_err(|err| {
            let detail = chain(&err);
            if err.is_connect() {
                DockerError::upstream(format!(
                    "cannot connect to the Docker daemon at {}: {detail}",
                    self.upstream_name
                ))
            } else {
                DockerError::upstream(format!("the Docker daemon did not answer: {detail}"))
            }
        })
    }

    /// Phase 5: the answer as the client gets it.
    pub(super) async fn response_phase(
        &self,
        ex: Exchange<'_>,
        owned: Owned,
        answered: Result<Response<Incoming>, DockerError>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        if let (Err(_), Some(reason)) = (&answered, owned.refused()) {
            // cistern cut the request body off (a load's archive).
            return Err(DockerError::client(StatusCode::FORBIDDEN, reason));
        }
        if let Some(opened) = ex.opened {
            // The container exists now, or its socket closes here.
            let created = answered.as_ref().is_ok_and(|r| r.status().is_success());
            self.jobs.settle(&self.client, opened, created).await;
        }
        let mut response = answered?;
        if let (Some(inject), Some(prepared)) = (&self.inject, ex.injected) {
            let response = inject
                .finish_create(&self.client, prepared, response)
                .await?;
            return owned.finish(response).await;
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = ex.client_upgrade else {
                return Err(DockerError::upstream(
                    "the Docker daemon switched protocols on a request that did not ask to",
                ));
            };
            let daemon_upgrade = hyper::upgrade::on(&mut response);
            // The stream keeps the connection's place while it runs, and a
            // BuildKit session its ID.
            let slot = ex.conn.slot.clone();
            let record = ex.record.clone();
            if matches!(ex.route.endpoint, route::Endpoint::Grpc) {
                let grpc = Arc::new(crate::buildkit::Grpc {
                    owner: ex.owner.clone(),
                    policy: ex.conn.policy.name.clone(),
                    allow: ex.conn.policy.grpc.clone(),
                    audit: ex.conn.policy.audit,
                    listener: ex.conn.listener.clone(),
                    registry: self.buildkit.clone(),
                    sessions: self.sessions.clone(),
                    ownership: self.ownership.clone(),
                    daemon: self.client.clone(),
                    cache_namespace: ex.owner.cache_mount_namespace(),
                    on_refusal: self
                        .grpc_refusals(ex.owner.tenant.to_string(), ex.conn.listener.to_string()),
                });
                let relay = hijack::grpc(client_upgrade, daemon_upgrade, record, grpc);
                self.tasks.spawn(async move {
                    relay.await;
                    drop(slot);
                });
            } else {
                let session = ex.session;
                let splice = hijack::splice(client_upgrade, daemon_upgrade, record);
                self.tasks.spawn(async move {
                    splice.await;
                    drop(session);
                    drop(slot);
                });
            }
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
        if matches!(
            ex.route.endpoint,
            route::Endpoint::Ping | route::Endpoint::PingHead
        ) {
            if let Some(version) = policy::buildkit::ping_builder_version(&ex.conn.policy) {
                parts.headers.insert("builder-version", version);
            }
        }
        owned
            .finish(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed_unsync(),
            ))
            .await
    }

    /// The phases in order: the driver.
    pub(super) async fn forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        record: &Arc<RequestRecord>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        let mut ex = match self.request_phase(&mut req, conn, record) {
            Ok(ex) => ex,
            Err(err) => {
                drain(req.into_body()).await;
                return Err(err);
            }
        };
        if let Err(err) = self.session_phase(&ex).await {
            drain(req.into_body()).await;
            return Err(err);
        }
        let (mut parts, body) = req.into_parts();
        let owned = match self.resolve_phase(&ex).await {
            Ok(owned) => owned,
            Err(err) => {
                drain(body).await;
                return Err(err);
            }
        };
        let body = self.body_phase(&mut ex, &owned, &mut parts, body).await?;
        let answered = self.upstream_phase(Request::from_parts(parts, body)).await;
        self.response_phase(ex, owned, answered).await
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::policy::{Policy, Sockets, Verdict};
    use crate::tenancy::jobs::{Jobs, Started};
    use crate::tenancy::ownership::identity::Tenant;
    use crate::tenancy::ownership::labels::{self, Owner};
    use crate::wire::json::counts;
    use crate::wire::route;

    /// The body stages as [`DockerProxy::edit_body`] runs them, minus the
    /// daemon's answers: the policy parses the create once, ownership,
    /// injection and jobs edit that value, and it is serialised once.
    #[test]
    fn a_create_body_is_parsed_once_and_serialised_once() {
        let route =
            route::classify(&http::Method::POST, "/v1.41/containers/create").expect("a route");
        let planned = Started {
            id: "0a1b2c3d4e5f".into(),
            socket: PathBuf::from("/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock"),
        };
        let sockets = Sockets {
            own: None,
            seen_at: None,
            to: Some(planned.socket.as_path()),
        };
        let raw = br#"{"Image":"busybox","Cmd":["sh"],"Env":["A=1"],"HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}"#;
        counts::take();

        let Verdict::Allow(inspected) = Policy::default().judge_body_on(&route, raw, sockets)
        else {
            panic!("the policy refused a plain create");
        };
        assert!(inspected.socket_mapped);
        let mut body = inspected.body;
        // Ownership labels it, injection adds routing, jobs mount the socket.
        let owner = Owner::new(Tenant::new("alice").expect("a tenant"), "ci");
        labels::label_body(body.json_mut().expect("json"), &owner);
        crate::inject::env::container_create(
            body.json_mut().expect("json"),
            &["HTTP_PROXY=http://cache.example:3128".to_string()],
        );
        Jobs::mount_container_socket(body.json_mut().expect("json"), &planned);
        let forwarded = body.into_bytes();

        assert_eq!(counts::take(), (1, 1), "(parsed, serialised)");
        let sent: serde_json::Value = serde_json::from_slice(&forwarded).expect("json");
        assert_eq!(sent["Labels"]["io.cistern.tenant"], "alice");
        assert_eq!(sent["Labels"]["io.cistern.socket"], "0a1b2c3d4e5f");
        assert_eq!(
            sent["HostConfig"]["Binds"][0],
            "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock:/var/run/docker.sock"
        );
    }
}
