//! The `/grpc` relay: HTTP/2 terminated on both upgraded connections (hyper's
//! server towards the client, its client towards the daemon), each gRPC call
//! relayed as its own stream, both ways, as it flows.
//!
//! Calls of `moby.buildkit.v1.Control` are dispatched by method:
//! * `Solve`: the one request message read (capped), judged
//!   ([`policy::judge_solve`]), its sessions checked against the tenant's
//!   ([`crate::tenancy::sessions`], shared with the `/session` hijack), its
//!   exporter's image names checked with the ownership
//!   rules (and mapped into the tenant's namespace), its ref claimed in the
//!   [`Registry`]; the
//!   answer is read to record the built image as the tenant's;
//! * `Status`: only for a ref the tenant's `Solve` claimed;
//! * `Session`: the session ID (`X-Docker-Expose-Session-Uuid`) bound to
//!   the tenant for as long as the stream runs; its bytes (context, secrets, SSH) pass untouched, unread
//!   and unlogged;
//! * `Prune` (judged), `DiskUsage` (only when allowed), `ListWorkers` and
//!   `Info` (passed);
//! * any other method, of Control or another service, is refused
//!   (`PERMISSION_DENIED`, rule `buildkit_method`), `grpc.health.v1.Health`
//!   excepted. Session callbacks (file sync, secrets, SSH, auth) run the
//!   other way, inside the `Session` stream, never as calls on this
//!   connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioExecutor;
use prost::Message;

use super::frame;
use super::policy::{self, Allow, Code, Denied, Rules};
use super::proto;
use super::registry::{Registry, Whose};
use crate::daemon::client::Daemon;
use crate::daemon::upstream::UpstreamClient;
use crate::http::body::Holding;
use crate::http::{BoxError, ProxyBody};
use crate::tenancy::ownership::images::{self, Change};
use crate::tenancy::ownership::labels::Owner;
use crate::tenancy::ownership::{lookup, Ownership};
use crate::tenancy::sessions::{self, Sessions};

/// The largest `Solve` request read (BuildKit's own client sends up to
/// 16 MiB messages).
const MAX_SOLVE: usize = 16 << 20;
/// The largest other request read (`Status`, `Prune`).
const MAX_SMALL: usize = 64 << 10;
/// The largest `Solve` answer read back (an exporter response).
const MAX_ANSWER: usize = 1 << 20;
/// How long a `Status` waits for its `Solve` to show up on another stream.
const PATIENCE: Duration = Duration::from_secs(5);
const CONTROL: &str = "/moby.buildkit.v1.Control/";

/// One tenant's `/grpc` connection: who it is and what it may do.
#[derive(Debug)]
pub struct Grpc {
    pub owner: Owner,
    /// The listener's policy name, for refusal messages.
    pub policy: String,
    pub allow: Allow,
    /// Audit mode: policy refusals are logged and the call forwarded.
    pub audit: bool,
    pub listener: Arc<str>,
    pub registry: Arc<Registry>,
    /// BuildKit sessions by tenant, shared with the `/session` hijack.
    pub sessions: Arc<Sessions>,
    pub ownership: Arc<Ownership>,
    /// cistern's own daemon client, for image lookups.
    pub daemon: UpstreamClient,
    /// The tenant's BuildKit cache mount namespace
    /// ([`Owner::cache_mount_namespace`]).
    pub cache_namespace: String,
    /// Told of each refusal (the call's path, the rule, whether audit mode
    /// forwarded it), for the admin listener's counters.
    pub on_refusal: OnRefusal,
}

/// What [`Grpc::on_refusal`] calls: the call's path, the rule, whether
/// audit mode forwarded it.
#[derive(Clone)]
pub struct OnRefusal(pub Arc<RefusalFn>);

/// See [`OnRefusal`].
pub type RefusalFn = dyn Fn(&str, &'static str, bool) + Send + Sync;

impl std::fmt::Debug for OnRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRefusal")
    }
}

/// Serves HTTP/2 on `client` and relays its calls to `daemon` until the
/// client's connection ends.
pub async fn relay<C, D>(client: C, daemon: D, grpc: Arc<Grpc>) -> Result<(), BoxError>
where
    C: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    D: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, ProxyBody>(daemon)
        .await?;
    let daemon_side = tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "BuildKit daemon connection ended with an error");
        }
    });
    let service = hyper::service::service_fn(move |req| {
        let grpc = grpc.clone();
        let sender = sender.clone();
        async move { Ok::<_, Infallible>(grpc.call(req, sender).await) }
    });
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(client, service)
        .await;
    daemon_side.abort();
    served.map_err(Into::into)
}

/// What cistern does with a call, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Solve,
    Status,
    Session,
    Prune,
    DiskUsage,
    /// Answered as the daemon answers (`ListWorkers`, `Info`, health).
    Pass,
    Refused,
}

impl Method {
    pub fn of(path: &str) -> Method {
        if let Some(m) = path.strip_prefix(CONTROL) {
            return match m {
                "Solve" => Method::Solve,
                "Status" => Method::Status,
                "Session" => Method::Session,
                "Prune" => Method::Prune,
                "DiskUsage" => Method::DiskUsage,
                "ListWorkers" | "Info" => Method::Pass,
                _ => Method::Refused,
            };
        }
        match path {
            "/grpc.health.v1.Health/Check" => Method::Pass,
            _ => Method::Refused,
        }
    }
}

impl Grpc {
    fn rules(&self) -> Rules<'_> {
        Rules {
            policy: &self.policy,
            allow: &self.allow,
            cache_namespace: &self.cache_namespace,
        }
    }

    fn tenant_key(&self) -> String {
        super::registry::key(&self.owner)
    }

    /// A refusal as the listener decides it: `Ok` (logged) in audit mode
    /// for policy refusals.
    fn decide(&self, path: &str, denied: Denied) -> Result<(), Denied> {
        let audit = self.audit && denied.is_policy();
        tracing::warn!(
            target: "cistern::policy",
            listener = %self.listener,
            tenant = %self.owner.tenant.as_str(),
            path,
            policy = %self.policy,
            rule = denied.rule,
            audit,
            "{}",
            if audit { "would refuse (audit mode: forwarded)" } else { "refused" }
        );
        (self.on_refusal.0)(path, denied.rule, audit);
        if audit {
            Ok(())
        } else {
            Err(denied)
        }
    }

    async fn call(
        &self,
        req: Request<Incoming>,
        sender: SendRequest<ProxyBody>,
    ) -> Response<ProxyBody> {
        let path = req.uri().path().to_string();
        let method = Method::of(&path);
        tracing::debug!(path, ?method, "BuildKit call");
        let answer = match method {
            Method::Solve => self.solve(req, sender).await,
            Method::Status => self.status(req, sender).await,
            Method::Session => self.session(req, sender).await,
            Method::Prune => self.prune(req, sender).await,
            Method::DiskUsage if self.allow.disk_usage => {
                Ok(forward(sender, streamed(req), None).await)
            }
            Method::DiskUsage => {
                let denied = Denied::policy(
                    &self.policy,
                    "buildkit_disk_usage",
                    "the build cache's disk usage is not shown through cistern (its records describe every tenant's builds)",
                );
                match self.decide(&path, denied) {
                    Ok(()) => Ok(forward(sender, streamed(req), None).await),
                    Err(d) => Err(d),
                }
            }
            Method::Pass => Ok(forward(sender, streamed(req), None).await),
            Method::Refused => {
                let denied = Denied::policy(
                    &self.policy,
                    "buildkit_method",
                    format_args!("the BuildKit call {path} is not available through cistern"),
                );
                match self.decide(&path, denied) {
                    Ok(()) => Ok(forward(sender, streamed(req), None).await),
                    Err(d) => Err(d),
                }
            }
        };
        answer.unwrap_or_else(|d| status_response(d.code as u32, &d.message))
    }

    /// `Solve`: see the module docs.
    async fn solve(
        &self,
        req: Request<Incoming>,
        sender: SendRequest<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Denied> {
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let body = read_capped(body, MAX_SOLVE).await?;
        let judged = match policy::judge_solve(self.rules(), &body) {
            Ok(judged) => judged,
            Err(denied) => {
                self.decide(&path, denied)?;
                // Audit mode: forwarded as sent, unchecked.
                let req = Request::from_parts(parts, full(body));
                return Ok(forward(sender, req, None).await);
            }
        };
        for session in &judged.sessions {
            // The session must be the tenant's own (opened by a `Session`
            // call here or a `/session` hijack), waiting for it as the
            // daemon does.
            let usable = self
                .sessions
                .build(&self.owner, session, "", sessions::OPEN_WAIT)
                .await;
            if usable.is_err() {
                let denied = Denied::policy(
                    &self.policy,
                    "buildkit_session",
                    "the build names a session this client did not open",
                );
                self.decide(&path, denied)?;
            }
        }
        let tenant = self.tenant_key();
        let mapped = self.image_names(&path, &judged.image_names).await?;
        if !judged.r#ref.is_empty()
            && !self
                .registry
                .claim_ref(&judged.r#ref, &tenant, Instant::now())
        {
            return Err(Denied::policy(
                &self.policy,
                "buildkit_ref",
                "the build ref is in use by another client",
            ));
        }
        let body = if mapped != judged.image_names || judged.frontend {
            // Only the appended entries are cistern's; see
            // `with_image_names`. A frontend's cache mounts go under the
            // tenant's namespace.
            let mut message = frame::single(&body).map_err(Denied::malformed)?.to_vec();
            if mapped != judged.image_names {
                message = policy::with_image_names(&message, &mapped);
            }
            if judged.frontend {
                message = policy::with_cache_namespace(&message, &self.cache_namespace);
            }
            Bytes::from(frame::encode(&message))
        } else {
            body
        };
        let req = Request::from_parts(parts, full(body));
        let record = (!mapped.is_empty()).then_some(mapped);
        Ok(forward(sender, req, record.map(|tags| (self, tags))).await)
    }

    /// The exporter's image names as the daemon gets them: each the
    /// tenant's to point, as a legacy build's `t` is
    /// ([`images::Rules::check_new_tag`]), mapped into its namespace.
    async fn image_names(&self, path: &str, names: &[String]) -> Result<Vec<String>, Denied> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let ns = self.owner.namespace.as_ref();
        let state = self
            .ownership
            .store()
            .state()
            .await
            .map_err(|e| unavailable(&e.message))?;
        let rules = images::Rules {
            state: &state,
            owner: &self.owner,
        };
        let daemon = Daemon::new(&self.daemon);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let mapped = images::new_repo(ns, name);
            let verdict = if rules.tag_visible(&mapped) {
                let current = lookup::image_ref(daemon, &mapped)
                    .await
                    .map_err(|e| unavailable(&e.message))?;
                rules
                    .check_new_tag(&current.name, current.id.as_deref())
                    .map_err(|e| e.message)
            } else {
                Err(format!(
                    "cistern: the tag {name} is in use by another tenant"
                ))
            };
            if let Err(why) = verdict {
                let why = why.strip_prefix("cistern: ").unwrap_or(&why).to_string();
                self.decide(
                    path,
                    Denied::policy(&self.policy, "buildkit_image_name", why),
                )?;
            }
            out.push(mapped);
        }
        Ok(out)
    }

    /// `Status`: only the tenant's own builds.
    async fn status(
        &self,
        req: Request<Incoming>,
        sender: SendRequest<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Denied> {
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let body = read_capped(body, MAX_SMALL).await?;
        let r#ref = policy::status_ref(&body)?;
        let tenant = self.tenant_key();
        let whose = self
            .registry
            .wait(PATIENCE, |r| r.build_ref(&r#ref, &tenant))
            .await;
        if whose != Whose::Mine {
            let denied = Denied::policy(
                &self.policy,
                "buildkit_status",
                "the status of a build this client did not start is not shown",
            );
            self.decide(&path, denied)?;
        }
        Ok(forward(sender, Request::from_parts(parts, full(body)), None).await)
    }

    /// `Session`: registered, then relayed untouched.
    async fn session(
        &self,
        req: Request<Incoming>,
        sender: SendRequest<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Denied> {
        let id = sessions::id_in(req.headers()).to_string();
        if id.is_empty() {
            return Err(Denied::malformed("a build session needs one session ID"));
        }
        let guard = match self.sessions.open(&self.owner, &id) {
            Ok(guard) => guard,
            Err(_) => {
                return Err(Denied::policy(
                    &self.policy,
                    "buildkit_session",
                    "the session ID is in use by another client",
                ))
            }
        };
        tracing::debug!(tenant = %self.owner.tenant, session = %id, "BuildKit session opened over /grpc");
        let answer = forward(sender, streamed(req), None).await;
        let (parts, body) = answer.into_parts();
        Ok(Response::from_parts(
            parts,
            Holding {
                inner: body,
                _held: guard,
            }
            .boxed_unsync(),
        ))
    }

    /// `Prune`: judged.
    async fn prune(
        &self,
        req: Request<Incoming>,
        sender: SendRequest<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Denied> {
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let body = read_capped(body, MAX_SMALL).await?;
        if let Err(denied) = policy::judge_prune(self.rules(), &body) {
            self.decide(&path, denied)?;
        }
        Ok(forward(sender, Request::from_parts(parts, full(body)), None).await)
    }

    /// A finished `Solve` that exported `tags`: the image is the tenant's.
    async fn record(&self, answer: &[u8], tags: Vec<String>) {
        let Ok(message) = frame::single(answer) else {
            return;
        };
        let Ok(resp) = proto::SolveResponse::decode(message) else {
            return;
        };
        let Some(id) = resp.exporter_response.get("containerimage.digest") else {
            return;
        };
        let change = Change::Image {
            id: id.clone(),
            how: "build",
            tags,
        };
        self.ownership.store().record(&self.owner, change).await;
    }
}

/// A request whose body streams through as the client sends it.
fn streamed(req: Request<Incoming>) -> Request<ProxyBody> {
    req.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A whole request body, at most `cap` bytes.
async fn read_capped(body: Incoming, cap: usize) -> Result<Bytes, Denied> {
    match Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(Denied {
            code: Code::ResourceExhausted,
            rule: "buildkit_malformed",
            message: format!("cistern: the request is over {cap} bytes (rule buildkit_malformed)"),
        }),
        Err(err) => Err(Denied::malformed(format_args!(
            "the request did not arrive whole: {err}"
        ))),
    }
}

fn unavailable(why: &str) -> Denied {
    Denied {
        code: Code::Unavailable,
        rule: "buildkit_upstream",
        message: format!("cistern: {why}"),
    }
}

/// Sends one call to the daemon and relays its answer; with `record`, the
/// (unary) answer is read whole first to record the image it names.
async fn forward(
    mut sender: SendRequest<ProxyBody>,
    mut req: Request<ProxyBody>,
    record: Option<(&Grpc, Vec<String>)>,
) -> Response<ProxyBody> {
    // The body may be cistern's edit: HTTP/2 frames say where it ends.
    req.headers_mut().remove(http::header::CONTENT_LENGTH);
    if req.uri().scheme().is_none() {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = format!("http://localhost{path}").parse() {
            *req.uri_mut() = uri;
        }
    }
    let sent = async {
        sender.ready().await?;
        sender.send_request(req).await
    };
    let answer = match sent.await {
        Ok(answer) => answer,
        Err(err) => {
            let denied = unavailable(&format!("the daemon's BuildKit did not answer: {err}"));
            return status_response(denied.code as u32, &denied.message);
        }
    };
    let (parts, body) = answer.into_parts();
    let Some((grpc, tags)) = record else {
        return Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
    };
    let collected = match Limited::new(body, MAX_ANSWER).collect().await {
        Ok(c) => c,
        Err(err) => {
            let denied = unavailable(&format!("the build's answer did not arrive whole: {err}"));
            return status_response(denied.code as u32, &denied.message);
        }
    };
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    grpc.record(&data, tags).await;
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::with_capacity(2);
    if !data.is_empty() {
        frames.push(Ok(Frame::data(data)));
    }
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    Response::from_parts(parts, body.boxed_unsync())
}

/// A gRPC error answer ("Trailers-Only": the status in the headers).
pub fn status_response(code: u32, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`,
/// as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_dispatched_by_path() {
        for (path, m) in [
            ("/moby.buildkit.v1.Control/Solve", Method::Solve),
            ("/moby.buildkit.v1.Control/Status", Method::Status),
            ("/moby.buildkit.v1.Control/Session", Method::Session),
            ("/moby.buildkit.v1.Control/Prune", Method::Prune),
            ("/moby.buildkit.v1.Control/DiskUsage", Method::DiskUsage),
            ("/moby.buildkit.v1.Control/ListWorkers", Method::Pass),
            ("/moby.buildkit.v1.Control/Info", Method::Pass),
            ("/grpc.health.v1.Health/Check", Method::Pass),
            (
                "/moby.buildkit.v1.Control/ListenBuildHistory",
                Method::Refused,
            ),
            ("/moby.filesync.v1.FileSync/DiffCopy", Method::Refused),
            ("/moby.buildkit.v1.Control/Solve/x", Method::Refused),
        ] {
            assert_eq!(Method::of(path), m, "{path}");
        }
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
        let r = status_response(7, "cistern: no (rule x)");
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(r.headers()["grpc-message"], "cistern: no (rule x)");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }
}
