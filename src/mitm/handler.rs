//! One request through the caching proxy: refuse, or drive the cache's
//! state machine and do its I/O.
//!
//! ```text
//! route ─ refused (unknown host 403, SNI/Host mismatch 421, CONNECT 405)
//!   └─ lookup ─┬─ Bypass(reason) ──────────► forward untouched
//!              ├─ Hit ─────────────────────► 304 | 206 | 416 | 200 from disk
//!              │  (fresh, or an index without validators downloaded
//!              │   within `caching.cache.unvalidated_window`)
//!              ├─ Stale ─► conditional GET ─┬─ 304 → refresh meta → serve hit
//!              │                            ├─ 5xx/error → stale-if-error or 502
//!              │                            └─ 200 → store + tee (as a miss)
//!              └─ Miss ─┬─ client Range ──► forward untouched, not stored
//!                       ├─ leader ────────► GET origin → store + tee
//!                       └─ follower ──────► wait for the leader's commit → hit
//!                                           (leader failed → forward)
//! ```
//!
//! *Store + tee*: a task reads the origin body and sends each chunk to the
//! client and to the cache writer, which appends on its own thread behind a
//! queue bounded in bytes and computes the content address at commit (so
//! disk writes and hashing do not sit between two chunks to the client).
//! Only a body that ended cleanly (hyper checks `Content-Length` and chunked
//! framing; the cache checks the length again) is committed; its last chunk
//! reaches the client only once the origin body ended cleanly. The
//! single-flight lead is held until the commit, so the client's next request
//! waits for the entry and hits. An origin error mid-body aborts the cache
//! write and fails the client's transfer. A cache write error (full disk)
//! drops the write and keeps streaming from the origin.
//!
//! Each request ends in one log event (`body.rs`) with its state and reason.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cistern_cache::{
    content_length, evaluate_conditionals, evaluate_range, Cache, Conditional, Flight, FlightGuard,
    FlightWaiter, Following, Hit, HitReason, Lookup, Miss, RangeDecision, Revalidation, Stale,
    StoreStart, Tail, WaitOutcome,
};
use futures_util::StreamExt;
use http::header::{
    HeaderName, HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    HOST, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE, VIA,
};
use http::{request, response, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::body::{Metered, RequestLog, Source};
use super::conn::{ConnInfo, Scheme};
use super::domains::{normalise, split_authority, Domains};
use super::error::ProxyError;
use super::learn::CachedSet;
use super::metrics::{DomainCounters, Metrics};
use super::tee;
use super::upstream::OriginClient;
use crate::http::body::{self, BoxError, ProxyBody};
use crate::http::error::chain;
use crate::http::headers::strip_hop_by_hop;
use crate::listen::limit::{ConnectionLimit, Slot};

/// How long a range request waits for a fetch of the whole file in flight
/// before it is forwarded to the origin.
const RANGE_FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// A follower may serve an entry stored this recently without revalidating.
const JUST_STORED: Duration = Duration::from_secs(60);
/// Response header saying what the cache did.
const X_CACHE: HeaderName = HeaderName::from_static("x-cistern-cache");

/// The shared state of the proxy's request handling.
pub struct Proxy {
    domains: Arc<CachedSet>,
    cache: Cache,
    origin: OriginClient,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    /// This instance's `Via` entry, added to every request it sends on: a
    /// request that comes back with it went round in a loop (a resolver
    /// or override that points a cached domain at cistern itself).
    via: HeaderValue,
    /// How long a client connection may be idle or send a request head.
    idle_timeout: Duration,
    /// Connections per client address.
    connections: Arc<ConnectionLimit<IpAddr>>,
}

/// Where a routed request goes.
struct Target {
    host: String,
    domain: String,
    uri: Uri,
}

/// A response plus what the log says about it.
struct Answer {
    response: Response<ProxyBody>,
    state: &'static str,
    reason: String,
    source: Source,
}

type Counter = Arc<DomainCounters>;

fn bump(counter: &Counter, field: fn(&DomainCounters) -> &std::sync::atomic::AtomicU64) {
    field(counter).fetch_add(1, Ordering::Relaxed);
}

impl Proxy {
    /// Builds the handler state.
    pub fn new(
        domains: Arc<CachedSet>,
        cache: Cache,
        origin: OriginClient,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        idle_timeout: Duration,
        max_connections_per_client: usize,
    ) -> Self {
        Proxy {
            domains,
            cache,
            origin,
            metrics,
            tasks,
            via: via_entry(),
            idle_timeout,
            connections: ConnectionLimit::new(
                max_connections_per_client,
                "caching.proxy.max_connections_per_client",
            ),
        }
    }

    /// A place for a new connection from `peer`, or `None` (close it) when
    /// that address already holds `caching.proxy.max_connections_per_client`.
    pub fn admit(&self, peer: SocketAddr) -> Option<Slot<IpAddr>> {
        self.connections.admit(peer.ip())
    }

    /// How long a client connection may be idle, or take to send a
    /// request's head, before it is closed (`caching.proxy.idle_timeout`).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The cache (for stats and shutdown).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cached domains now.
    pub fn domains(&self) -> Arc<Domains> {
        self.domains.domains()
    }

    /// Serves one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Metered>, Infallible> {
        let mut log = RequestLog::new(req.method(), req.uri().path(), &conn);
        let (answer, counter) = match self.route(&req, &conn) {
            Err(err) => (error_answer(err, "refused"), None),
            Ok(target) => {
                log.host = target.host.clone();
                log.domain = Some(target.domain.clone());
                let counter = self.metrics.domain(&target.domain).unwrap_or_default();
                bump(&counter, |c| &c.requests);
                // A registry's configuration, for the host it names: its
                // URL without the query, which may carry a token.
                let index_config = (req.method() == Method::GET
                    && target.uri.path().ends_with("/config.json")
                    && self.domains.learns_at_run_time())
                .then(|| {
                    format!(
                        "{}://{}{}",
                        target.uri.scheme_str().unwrap_or("https"),
                        target.uri.authority().map_or("", |a| a.as_str()),
                        target.uri.path()
                    )
                });
                let mut answer = self.cached(req, target.uri, &counter).await;
                if let Some(url) =
                    index_config.filter(|_| answer.response.status() == StatusCode::OK)
                {
                    let headers = answer.response.headers();
                    let expected = content_length(headers);
                    let encoding = headers
                        .get(http::header::CONTENT_ENCODING)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    answer.response = answer.response.map(|body| {
                        self.domains
                            .learn_from_index_config(url, encoding, expected, body)
                    });
                }
                (answer, Some(counter))
            }
        };
        Ok(metered(answer, log, counter))
    }

    /// Forwards an absolute-form request for a host outside the cached
    /// domains as it came, without the cache (the forward proxy with
    /// `others: tunnel`).
    pub async fn pass_through(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Metered>, Infallible> {
        let mut log = RequestLog::new(req.method(), req.uri().path(), &conn);
        log.host = req.uri().host().map(normalise).unwrap_or_default();
        let (mut parts, body) = req.into_parts();
        let answer = if parts.uri.scheme_str() == Some("http") && parts.uri.host().is_some() {
            strip_hop_by_hop(&mut parts.headers, false);
            let reason = "not a cached domain; forwarded uncached".to_owned();
            let unused = Counter::default();
            self.forward(parts, stream_body(body), "tunnel", reason, &unused)
                .await
        } else {
            let err = ProxyError::Client {
                status: StatusCode::BAD_REQUEST,
                message: "a forward proxy request needs an absolute http:// URL".into(),
            };
            error_answer(err, "refused")
        };
        Ok(metered(answer, log, None))
    }

    /// Checks the host against the cached domains and the SNI, and builds
    /// the origin URL.
    fn route(&self, req: &Request<Incoming>, conn: &ConnInfo) -> Result<Target, ProxyError> {
        let refuse = |status: StatusCode, message: String| ProxyError::Client { status, message };
        if self.came_back(req.headers()) {
            return Err(refuse(
                StatusCode::LOOP_DETECTED,
                "request loop: this request already went through this cistern (the origin \
                 resolves to cistern itself)"
                    .into(),
            ));
        }
        if req.method() == Method::CONNECT {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: this is not a forward proxy".into(),
            ));
        }
        let authority = match req.uri().authority() {
            Some(a) => a.as_str().to_owned(),
            None => req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "request has no Host".into()))?,
        };
        let (host, port) = split_authority(&authority)
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "malformed Host".into()))?;
        let domains = self.domains.domains();
        let domain = domains.matching(&host).ok_or_else(|| {
            refuse(
                StatusCode::FORBIDDEN,
                format!("{host} is not a cached domain"),
            )
        })?;
        if let Some(sni) = &conn.sni {
            if normalise(sni) != host {
                return Err(refuse(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!("Host {host} does not match the TLS server name {sni}"),
                ));
            }
        }
        let authority = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        // An absolute-form `https://` URL over plain HTTP (a forward-proxy
        // client that does not use CONNECT) is still fetched and stored as
        // HTTPS: never a silent downgrade to plain HTTP towards the origin.
        // Over TLS, the connection's scheme stands.
        let scheme = match (conn.scheme, req.uri().scheme_str()) {
            (_, None) => conn.scheme,
            (Scheme::Http, Some(s)) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            (scheme, Some(s))
                if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") =>
            {
                scheme
            }
            (_, Some(s)) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("scheme {s} is not proxied"),
                ))
            }
        };
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri = format!("{}://{authority}{path}", scheme.as_str())
            .parse::<Uri>()
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "malformed request target".into()))?;
        Ok(Target {
            host,
            domain: domain.to_owned(),
            uri,
        })
    }

    /// The cache state machine for a routed request.
    async fn cached(&self, req: Request<Incoming>, uri: Uri, counter: &Counter) -> Answer {
        let (mut parts, body) = req.into_parts();
        // One Host for HTTP/1.1 and HTTP/2 (`:authority`) clients alike: the
        // stored policy compares it on every lookup.
        if let Some(authority) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, authority);
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, false);
        let lookup = match self.cache.lookup(&parts, SystemTime::now()).await {
            Ok(lookup) => lookup,
            Err(err) => {
                tracing::warn!(error = %err, "cache lookup failed; forwarding");
                bump(counter, |c| &c.bypasses);
                let reason = format!("cache lookup failed: {err}");
                return self
                    .forward(parts, stream_body(body), "bypass", reason, counter)
                    .await;
            }
        };
        match lookup {
            Lookup::Bypass(reason) => {
                bump(counter, |c| &c.bypasses);
                self.forward(
                    parts,
                    stream_body(body),
                    "bypass",
                    reason.to_string(),
                    counter,
                )
                .await
            }
            Lookup::Hit(hit) => {
                bump(counter, |c| &c.hits);
                let reason = hit.reason.to_string();
                self.serve_hit(&parts, *hit, "hit", reason).await
            }
            Lookup::Stale(stale) => self.revalidate(parts, *stale, counter).await,
            Lookup::Miss(miss) => self.miss(parts, *miss, counter).await,
        }
    }

    /// Serves a cache entry, answering the client's own conditionals and
    /// range.
    async fn serve_hit(
        &self,
        req: &request::Parts,
        hit: Hit,
        state: &'static str,
        reason: String,
    ) -> Answer {
        let Hit {
            entry,
            response: mut head,
            body,
            ..
        } = hit;
        strip_hop_by_hop(&mut head.headers, false);
        head.version = Version::HTTP_11;
        head.headers
            .insert(X_CACHE, HeaderValue::from_static(state));
        if evaluate_conditionals(&req.headers, &head.headers) == Conditional::NotModified {
            head.status = StatusCode::NOT_MODIFIED;
            head.headers.remove(CONTENT_LENGTH);
            return Answer {
                response: Response::from_parts(head, body::empty()),
                state,
                reason: format!("{reason}; client copy is current"),
                source: Source::Proxy,
            };
        }
        let size = entry.size();
        head.headers
            .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let head_only = req.method == Method::HEAD;
        let decision = evaluate_range(&req.headers, &head.headers, size);
        let (body, reason) = match decision {
            RangeDecision::Full => {
                head.headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
                let body = if head_only {
                    body::empty()
                } else {
                    cache_body(body)
                };
                (body, reason)
            }
            RangeDecision::Partial { start, end } => {
                head.status = StatusCode::PARTIAL_CONTENT;
                set_content_range(&mut head.headers, decision, size);
                head.headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(end - start + 1));
                let body = if head_only {
                    body::empty()
                } else if let Some(part) = full_range(&body, start, end) {
                    body::full(part)
                } else {
                    match self.cache.store().range(&entry, start, end).await {
                        Ok(reader) => StreamBody::new(
                            reader
                                .into_stream()
                                .map(|r| r.map(Frame::data).map_err(BoxError::from)),
                        )
                        .boxed_unsync(),
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot read a range from the cache");
                            let status = StatusCode::INTERNAL_SERVER_ERROR;
                            return plain(status, "cistern: cache read failed", "error", err);
                        }
                    }
                };
                (body, format!("{reason}; range {start}-{end}"))
            }
            RangeDecision::NotSatisfiable => {
                head.status = StatusCode::RANGE_NOT_SATISFIABLE;
                set_content_range(&mut head.headers, decision, size);
                head.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
                (body::empty(), format!("{reason}; range not satisfiable"))
            }
        };
        Answer {
            response: Response::from_parts(head, body),
            state,
            reason,
            source: Source::Cache,
        }
    }

    /// Revalidates a stale entry with a conditional request to the origin.
    /// Concurrent requests for the same stale entry make one: the first
    /// leads (single-flight, as for a miss); the others wait for it, then
    /// serve the refreshed entry or read along with the new version it
    /// downloads. If the leader fails, each goes to the origin itself (and
    /// gets stale-if-error).
    async fn revalidate(&self, parts: request::Parts, stale: Stale, counter: &Counter) -> Answer {
        let waiter = match self.cache.store().lock(&stale.entry.key) {
            Flight::Leader(guard) => {
                return self
                    .revalidate_once(parts, stale, Some(guard), counter)
                    .await
            }
            Flight::Follower(waiter) => waiter,
        };
        let outcome = match self.follow(&parts, waiter, counter).await {
            Ok(answer) => return answer,
            Err(outcome) => outcome,
        };
        if outcome == WaitOutcome::Committed {
            match self.stored_after_wait(parts, counter).await {
                Ok(answer) => answer,
                Err((parts, stale)) => self.revalidate_once(parts, *stale, None, counter).await,
            }
        } else {
            self.revalidate_once(parts, stale, None, counter).await
        }
    }

    /// Sends the conditional request for a stale entry and acts on the
    /// answer; `guard` (when leading concurrent requests) is released when
    /// the entry is refreshed, replaced, or left as it was.
    async fn revalidate_once(
        &self,
        parts: request::Parts,
        stale: Stale,
        guard: Option<FlightGuard>,
        counter: &Counter,
    ) -> Answer {
        let revalidation = stale.revalidation.clone();
        let mode = stale.entry.meta.mode;
        let sent = self.send(&revalidation, body::empty(), counter).await;
        let now = SystemTime::now();
        let res = match sent {
            Ok(res) => res,
            Err(err) => {
                return match self.cache.stale_if_error(stale, now).await {
                    Ok(Some(hit)) => {
                        bump(counter, |c| &c.hits);
                        let reason = format!("origin failed ({err}); serving stale");
                        self.serve_hit(&parts, hit, "stale-if-error", reason).await
                    }
                    _ => error_answer(err, "stale"),
                };
            }
        };
        let (rparts, rbody) = res.into_parts();
        if rparts.status == StatusCode::NOT_MODIFIED {
            return match self.cache.revalidated(stale, &rparts, now).await {
                Ok(Revalidation::NotModified(hit)) => {
                    if let Some(guard) = guard {
                        guard.finish(true);
                    }
                    bump(counter, |c| &c.revalidations);
                    let reason = "origin answered 304".to_owned();
                    self.serve_hit(&parts, *hit, "revalidated", reason).await
                }
                Ok(Revalidation::Modified) => {
                    // A 304 that does not fit the stored entry: fetch afresh.
                    bump(counter, |c| &c.misses);
                    let upstream = self.cache.policy().lookup_request(&parts, mode);
                    match self.send(&upstream, body::empty(), counter).await {
                        Ok(res) => {
                            let (rparts, rbody) = res.into_parts();
                            let reason = "304 did not match the stored entry".to_owned();
                            self.store_and_stream(
                                &parts, &upstream, rparts, rbody, guard, reason, counter,
                            )
                            .await
                        }
                        Err(err) => error_answer(err, "miss"),
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot refresh a cache entry");
                    let reason = format!("cache update failed: {err}");
                    self.forward(parts, body::empty(), "bypass", reason, counter)
                        .await
                }
            };
        }
        if rparts.status.is_server_error() {
            if let Ok(Some(hit)) = self.cache.stale_if_error(stale, now).await {
                bump(counter, |c| &c.hits);
                let reason = format!("origin answered {}; serving stale", rparts.status.as_u16());
                return self.serve_hit(&parts, hit, "stale-if-error", reason).await;
            }
        }
        bump(counter, |c| &c.misses);
        let reason = "origin sent a new version".to_owned();
        self.store_and_stream(&parts, &revalidation, rparts, rbody, guard, reason, counter)
            .await
    }

    /// Nothing stored: fetch once (single-flight), store and stream.
    async fn miss(&self, parts: request::Parts, miss: Miss, counter: &Counter) -> Answer {
        if parts.headers.contains_key(RANGE) {
            // The whole file may be on its way into the cache (e.g. the
            // client's own download that just ended and is being
            // committed): wait for it a little, not for a whole download.
            if let Some(waiter) = self.cache.store().follow(&miss.key) {
                let waited = tokio::time::timeout(RANGE_FOLLOW_WAIT, waiter.wait()).await;
                if waited == Ok(WaitOutcome::Committed) {
                    return self.after_wait(parts, counter).await;
                }
            }
            bump(counter, |c| &c.misses);
            let reason = format!("{}; range request forwarded, not stored", miss.reason);
            return self
                .forward(parts, body::empty(), "miss", reason, counter)
                .await;
        }
        let store = self.cache.store();
        match store.lock(&miss.key) {
            Flight::Leader(guard) => {
                if let Ok(Some(_)) = store.get(&miss.key).await {
                    guard.finish(true);
                    return self.after_wait(parts, counter).await;
                }
                bump(counter, |c| &c.misses);
                match self.send(&miss.upstream, body::empty(), counter).await {
                    Ok(res) => {
                        let (rparts, rbody) = res.into_parts();
                        let reason = miss.reason.to_string();
                        self.store_and_stream(
                            &parts,
                            &miss.upstream,
                            rparts,
                            rbody,
                            Some(guard),
                            reason,
                            counter,
                        )
                        .await
                    }
                    Err(err) => {
                        drop(guard);
                        error_answer(err, "miss")
                    }
                }
            }
            Flight::Follower(waiter) => {
                let outcome = match self.follow(&parts, waiter, counter).await {
                    Ok(answer) => return answer,
                    Err(outcome) => outcome,
                };
                match outcome {
                    WaitOutcome::Committed => self.after_wait(parts, counter).await,
                    outcome => {
                        bump(counter, |c| &c.misses);
                        let reason =
                            format!("{}; {outcome}, forwarded without storing", miss.reason);
                        self.forward(parts, body::empty(), "miss", reason, counter)
                            .await
                    }
                }
            }
        }
    }

    /// Waits for the request leading this key's flight. Reads along with
    /// its download (`Ok`) when that is the representation this request
    /// asks for (`Vary`); else, once the leader is done, how it ended (then
    /// the caller looks up this request's own variant).
    async fn follow(
        &self,
        parts: &request::Parts,
        mut waiter: FlightWaiter,
        counter: &Counter,
    ) -> Result<Answer, WaitOutcome> {
        if reads_along(parts) {
            match waiter.download().await {
                Following::Download(tail) if self.cache.policy().selects(parts, tail.meta()) => {
                    bump(counter, |c| &c.hits);
                    return Ok(self.serve_download(parts, &tail));
                }
                Following::Download(_) => {}
                Following::Done(done) => return Err(done),
            }
        }
        Err(waiter.wait().await)
    }

    /// After another request stored the entry: serve it.
    async fn after_wait(&self, parts: request::Parts, counter: &Counter) -> Answer {
        match self.stored_after_wait(parts, counter).await {
            Ok(answer) => answer,
            Err((parts, stale)) => self.revalidate(parts, *stale, counter).await,
        }
    }

    /// After another request stored or refreshed the entry: serves it, or
    /// hands back the stale entry it left to revalidate.
    async fn stored_after_wait(
        &self,
        parts: request::Parts,
        counter: &Counter,
    ) -> Result<Answer, (request::Parts, Box<Stale>)> {
        let reason = "stored by a concurrent request".to_owned();
        Ok(match self.cache.lookup(&parts, SystemTime::now()).await {
            Ok(Lookup::Hit(hit)) => {
                bump(counter, |c| &c.hits);
                self.serve_hit(&parts, *hit, "hit", reason).await
            }
            Ok(Lookup::Stale(stale)) => {
                let age = SystemTime::now()
                    .duration_since(stale.entry.meta.stored_at())
                    .unwrap_or_default();
                if age > JUST_STORED {
                    return Err((parts, stale));
                }
                // An always-revalidate entry the leader fetched a moment
                // ago: asking the origin again would only cost a round trip.
                match self.cache.store().body(&stale.entry).await {
                    Ok(body) => {
                        bump(counter, |c| &c.hits);
                        let mut head = Response::new(()).into_parts().0;
                        head.status = stale.entry.meta.status;
                        head.headers = stale.entry.meta.headers.clone();
                        let hit = Hit {
                            entry: stale.entry,
                            response: head,
                            body,
                            reason: HitReason::Fresh,
                        };
                        self.serve_hit(&parts, hit, "hit", reason).await
                    }
                    Err(_) => return Err((parts, stale)),
                }
            }
            _ => {
                bump(counter, |c| &c.misses);
                let reason = "concurrent fetch stored another variant; forwarded".to_owned();
                self.forward(parts, body::empty(), "miss", reason, counter)
                    .await
            }
        })
    }

    /// Streams an origin response to the client, teeing it into the cache
    /// when the cache wants it. `guard` is the single-flight lead, released
    /// when the write is committed or given up.
    #[allow(clippy::too_many_arguments)]
    async fn store_and_stream(
        &self,
        client: &request::Parts,
        upstream: &request::Parts,
        mut rparts: response::Parts,
        rbody: Incoming,
        guard: Option<FlightGuard>,
        reason: String,
        counter: &Counter,
    ) -> Answer {
        strip_hop_by_hop(&mut rparts.headers, false);
        let start = self
            .cache
            .store_response(upstream, &rparts, SystemTime::now())
            .await;
        let writer = match start {
            Ok(StoreStart::Store(writer)) => writer,
            Ok(StoreStart::NoStore(why)) => {
                drop(guard);
                let reason = format!("{reason}; not stored: {why}");
                return self.stream_through(client, rparts, rbody, "miss", reason, counter);
            }
            Err(err) => {
                drop(guard);
                tracing::warn!(error = %chain(&err), "cannot start a cache write; serving from origin");
                let reason = format!("{reason}; not stored: {err}");
                return self.stream_through(client, rparts, rbody, "miss", reason, counter);
            }
        };
        if let Some(guard) = &guard {
            // Concurrent requests for the same file read along from here.
            guard.publish(writer.tail());
        }
        let len = content_length(&rparts.headers);
        rparts
            .headers
            .insert(X_CACHE, HeaderValue::from_static("miss"));
        rparts.version = Version::HTTP_11;
        if evaluate_conditionals(&client.headers, &rparts.headers) == Conditional::NotModified {
            self.tasks.spawn(tee::drain_into_cache(
                rbody,
                *writer,
                guard,
                counter.clone(),
            ));
            rparts.status = StatusCode::NOT_MODIFIED;
            rparts.headers.remove(CONTENT_LENGTH);
            return Answer {
                response: Response::from_parts(rparts, body::empty()),
                state: "miss",
                reason: format!("{reason}; storing; client copy is current"),
                source: Source::Proxy,
            };
        }
        let body = if client.method == Method::HEAD {
            self.tasks.spawn(tee::drain_into_cache(
                rbody,
                *writer,
                guard,
                counter.clone(),
            ));
            body::empty()
        } else {
            let resume = self.resume(client, &writer.tail());
            let rest: tee::Rest = Box::new(move |reader| Box::pin(read_along(reader, resume)));
            tee::body(
                rbody,
                *writer,
                guard,
                counter.clone(),
                self.tasks.clone(),
                len,
                rest,
            )
        };
        Answer {
            response: Response::from_parts(rparts, body),
            state: "miss",
            reason: format!("{reason}; storing"),
            source: Source::Origin,
        }
    }

    fn stream_through(
        &self,
        client: &request::Parts,
        mut rparts: response::Parts,
        rbody: Incoming,
        state: &'static str,
        reason: String,
        counter: &Counter,
    ) -> Answer {
        rparts.version = Version::HTTP_11;
        rparts
            .headers
            .insert(X_CACHE, HeaderValue::from_static(state));
        let body = if client.method == Method::HEAD {
            body::empty()
        } else {
            origin_body(rbody, counter.clone())
        };
        Answer {
            response: Response::from_parts(rparts, body),
            state,
            reason,
            source: Source::Origin,
        }
    }

    /// Forwards a request as it came, without the cache.
    async fn forward(
        &self,
        parts: request::Parts,
        body: ProxyBody,
        state: &'static str,
        reason: String,
        counter: &Counter,
    ) -> Answer {
        match self.send(&parts, body, counter).await {
            Ok(res) => {
                let (mut rparts, rbody) = res.into_parts();
                strip_hop_by_hop(&mut rparts.headers, false);
                self.stream_through(&parts, rparts, rbody, state, reason, counter)
            }
            Err(err) => error_answer(err, state),
        }
    }

    /// Serves a request from the download in flight for the same file (see
    /// `cistern_cache::tail`): the origin's head, then the body as it is
    /// written. The transfer breaks if the download does; if only writing
    /// it fails (a full disk), the rest comes from the origin by a range
    /// request, so the file still arrives whole.
    fn serve_download(&self, req: &request::Parts, tail: &Tail) -> Answer {
        let mut head = Response::new(()).into_parts().0;
        head.status = tail.status();
        head.headers = tail.headers().clone();
        strip_hop_by_hop(&mut head.headers, false);
        head.headers
            .insert(X_CACHE, HeaderValue::from_static("hit"));
        let body = if req.method == Method::HEAD {
            body::empty()
        } else {
            StreamBody::new(read_along(tail.reader(), self.resume(req, tail))).boxed_unsync()
        };
        Answer {
            response: Response::from_parts(head, body),
            state: "hit",
            reason: "read along with the download in flight".to_owned(),
            source: Source::Cache,
        }
    }

    /// What a request reading `tail`'s download needs to go on from the
    /// origin should the download fail to write or stall.
    fn resume(&self, req: &request::Parts, tail: &Tail) -> Resume {
        Resume {
            origin: self.origin.clone(),
            uri: req.uri.clone(),
            headers: req.headers.clone(),
            stored: tail.headers().clone(),
            via: self.via.clone(),
        }
    }

    /// Whether the request carries this instance's own `Via` entry.
    fn came_back(&self, headers: &HeaderMap) -> bool {
        let own = self.via.as_bytes();
        headers.get_all(VIA).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|entry| entry.trim_ascii() == own)
        })
    }

    /// Sends a request to its origin; a failure or a 5xx answer counts as
    /// an origin error.
    async fn send(
        &self,
        parts: &request::Parts,
        body: ProxyBody,
        counter: &Counter,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = parts.headers.clone();
        strip_hop_by_hop(req.headers_mut(), false);
        req.headers_mut().append(VIA, self.via.clone());
        let host = parts.uri.host().unwrap_or_default().to_owned();
        let started = std::time::Instant::now();
        let sent = self.origin.request(req).await;
        if sent.is_ok() {
            counter
                .origin_latency
                .observe(started.elapsed().as_secs_f64());
        }
        if sent
            .as_ref()
            .map_or(true, |res| res.status().is_server_error())
        {
            bump(counter, |c| &c.origin_errors);
        }
        sent.map_err(|err| ProxyError::Origin {
            host,
            source: Box::new(err),
        })
    }
}

/// The response with its body counted and its log event written when the
/// body ends.
fn metered(answer: Answer, mut log: RequestLog, counter: Option<Counter>) -> Response<Metered> {
    log.state = answer.state;
    log.reason = answer.reason;
    log.source = answer.source;
    log.status = answer.response.status().as_u16();
    let (parts, body) = answer.response.into_parts();
    let expected = match log.method {
        Method::HEAD => Some(0),
        _ => content_length(&parts.headers),
    };
    Response::from_parts(parts, Metered::new(body, log, counter, expected))
}

/// `1.1 cistern-XXXXXXXX`: a pseudonym unique to this process, so that two
/// cisterns in a chain are not taken for a loop.
fn via_entry() -> HeaderValue {
    use std::hash::BuildHasher;
    // RandomState is seeded randomly per process.
    let tag = std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32;
    HeaderValue::from_str(&format!("1.1 cistern-{tag:08x}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 cistern"))
}

/// Whether a request that follows a download in flight can be answered
/// with the download as it arrives: a plain `GET` or `HEAD`. Ranges and
/// conditionals wait for the stored entry instead.
fn reads_along(req: &request::Parts) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD)
        && !req.headers.contains_key(RANGE)
        && !req.headers.contains_key(IF_NONE_MATCH)
        && !req.headers.contains_key(IF_MODIFIED_SINCE)
}

/// What a request reading along with a download needs to fetch the rest of
/// the body itself when the download's write fails.
struct Resume {
    origin: OriginClient,
    uri: Uri,
    headers: HeaderMap,
    /// The download's response headers (length and validators).
    stored: HeaderMap,
    via: HeaderValue,
}

impl Resume {
    /// The origin's body from `offset` on, for the same version of the file
    /// (`If-Range`); `None` when nothing is left.
    async fn from(&self, offset: u64) -> Result<Option<Incoming>, BoxError> {
        if content_length(&self.stored) == Some(offset) {
            return Ok(None);
        }
        let validator = self
            .stored
            .get(ETAG)
            .filter(|etag| !etag.as_bytes().starts_with(b"W/"))
            .or_else(|| self.stored.get(LAST_MODIFIED))
            .ok_or("the file has no validator to resume it with")?;
        let mut req = Request::new(body::empty());
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        *headers = self.headers.clone();
        for name in [RANGE, IF_RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE] {
            headers.remove(name);
        }
        strip_hop_by_hop(headers, false);
        let range = HeaderValue::from_str(&format!("bytes={offset}-"))?;
        headers.insert(RANGE, range);
        headers.insert(IF_RANGE, validator.clone());
        headers.append(VIA, self.via.clone());
        let res = self.origin.request(req).await?;
        let resumes_here = res
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
        match res.status() {
            StatusCode::PARTIAL_CONTENT if resumes_here => Ok(Some(res.into_body())),
            StatusCode::RANGE_NOT_SATISFIABLE => Ok(None),
            status => Err(format!("the origin did not resume the file ({status})").into()),
        }
    }
}

/// Where a body read along with a download comes from.
enum Along {
    Download(Box<(cistern_cache::TailReader, Resume)>),
    Origin(Incoming),
    Done,
}

/// The body of a request reading along with a download (see
/// [`Proxy::serve_download`]).
fn read_along(
    reader: cistern_cache::TailReader,
    resume: Resume,
) -> impl futures_util::Stream<Item = Result<Frame<bytes::Bytes>, BoxError>> + Send {
    let start = Along::Download(Box::new((reader, resume)));
    futures_util::stream::unfold(start, |mut state| async move {
        loop {
            state = match state {
                Along::Done => return None,
                Along::Download(mut along) => {
                    let (reader, resume) = &mut *along;
                    match reader.chunk().await {
                        Ok(Some(data)) => {
                            return Some((Ok(Frame::data(data)), Along::Download(along)))
                        }
                        Ok(None) => return None,
                        Err(err) => {
                            let Some(offset) = reader.resume_from() else {
                                return Some((Err(err.into()), Along::Done));
                            };
                            tracing::info!(offset, "the download in flight failed to write or stalled; the rest from the origin");
                            match resume.from(offset).await {
                                Ok(Some(body)) => Along::Origin(body),
                                Ok(None) => return None,
                                Err(err) => return Some((Err(err), Along::Done)),
                            }
                        }
                    }
                }
                Along::Origin(mut body) => match body.frame().await {
                    Some(Ok(frame)) if frame.is_data() => {
                        return Some((Ok(frame), Along::Origin(body)))
                    }
                    Some(Ok(_trailers)) => Along::Origin(body),
                    Some(Err(err)) => return Some((Err(err.into()), Along::Done)),
                    None => return None,
                },
            };
        }
    })
}

/// Bytes `start..=end` of a body already read and checked whole (a small
/// one, or one held in memory), without reading it again.
fn full_range(body: &cistern_cache::Body, start: u64, end: u64) -> Option<bytes::Bytes> {
    let cistern_cache::Body::Full(whole) = body else {
        return None;
    };
    let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
    (start <= end && end < whole.len()).then(|| whole.slice(start..=end))
}

fn cache_body(body: cistern_cache::Body) -> ProxyBody {
    match body {
        cistern_cache::Body::Full(bytes) => body::full(bytes),
        cistern_cache::Body::Stream(reader) => StreamBody::new(
            reader
                .into_stream()
                .map(|r| r.map(Frame::data).map_err(BoxError::from)),
        )
        .boxed_unsync(),
    }
}

fn origin_body(body: Incoming, counter: Counter) -> ProxyBody {
    body.map_err(move |err| {
        bump(&counter, |c| &c.origin_errors);
        BoxError::from(err)
    })
    .boxed_unsync()
}

fn stream_body(body: Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed_unsync()
}

fn set_content_range(headers: &mut HeaderMap, decision: RangeDecision, size: u64) {
    if let Some(value) =
        cistern_cache::content_range(decision, size).and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(CONTENT_RANGE, value);
    }
}

fn plain(
    status: StatusCode,
    text: &'static str,
    state: &'static str,
    reason: impl std::fmt::Display,
) -> Answer {
    let mut response = Response::new(body::full(format!("{text}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Answer {
        response,
        state,
        reason: reason.to_string(),
        source: Source::Proxy,
    }
}

fn error_answer(err: ProxyError, state: &'static str) -> Answer {
    if matches!(err, ProxyError::Origin { .. }) {
        tracing::warn!(error = %err, "origin request failed");
    }
    let status = err.status();
    let mut response = Response::new(body::full(format!("cistern: {err}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Answer {
        response,
        state,
        reason: err.to_string(),
        source: Source::Proxy,
    }
}
