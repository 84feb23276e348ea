//! The caching decisions, free of I/O.
//!
//! [`Policy`] answers three questions with http-cache-semantics doing the
//! RFC 9111 work (freshness, `Vary`, validators, `no-store`, `private`):
//!
//! 1. [`Policy::classify`]: may this request use the cache at all, and under
//!    which key and rule mode?
//! 2. [`Policy::freshness`]: given the stored entry, is it a hit, stale
//!    (with the conditional request to send), or a `Vary` mismatch?
//! 3. [`Policy::on_response`] / [`Policy::on_revalidated`]: store the origin's
//!    answer or not, and how a 304 refreshes the stored metadata.
//!
//! Rule modes act by rewriting the *freshness view* of the response that the
//! `CachePolicy` is built from, so that every later decision still goes
//! through the library:
//!
//! - `immutable`: `Cache-Control: public, max-age=<immutable ttl>, immutable`
//!   replaces the origin's freshness headers on `200` responses (`no-store`
//!   and `private` are still honoured). Client `Cache-Control`/`Pragma` are
//!   ignored on lookup: a versioned file cannot change, so `max-age=0` from a
//!   client would only cost a download.
//! - `revalidate`: `Cache-Control: no-cache` replaces them, so every use is a
//!   conditional request to the origin. An origin that sends no validator
//!   (no `ETag`, no `Last-Modified`) cannot answer 304: each revalidation
//!   would download the whole file again. Such an entry downloaded less
//!   than [`PolicyConfig::unvalidated_window`] ago is served as it is
//!   ([`Freshness::Unvalidated`]), so twenty jobs starting together cost
//!   one download; `0` turns this off.
//!
//! The response headers a hit returns come from that view (with `Age`), so
//! clients see the same freshness the cache applies.
//!
//! A response that sets a cookie (`Set-Cookie`) was made for the client
//! whose request reached the origin: its body may name that client's
//! session. Outside `immutable` rules it is not stored
//! ([`NoStoreReason::SetsCookie`]), as nginx and Varnish do by default,
//! whatever its `Cache-Control` says. Under an `immutable` rule the path is
//! a versioned or content-addressed artifact, the same bytes for everyone,
//! so it is stored, and the view and the stored headers leave the cookie
//! out, so no hit hands one job's cookie to another (CDNs set load-balancer
//! cookies on package files).

use std::time::{Duration, SystemTime};

use http::header::{
    HeaderName, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    COOKIE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, PRAGMA, RANGE, TRANSFER_ENCODING, VARY,
};
use http::{request, response, HeaderMap, HeaderValue, Method, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use crate::key::CacheKey;
use crate::meta::{unix_ms, Meta};
use crate::reason::{BypassReason, NoStoreReason};
use crate::rules::{Mode, Rules};

/// Default freshness of `immutable` entries: a year.
pub const DEFAULT_IMMUTABLE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default [`PolicyConfig::unvalidated_window`].
pub const DEFAULT_UNVALIDATED_WINDOW: Duration = Duration::from_secs(10);

/// Typed policy settings (the config layer validates and builds these).
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Rule set (configured rules followed by built-in defaults).
    pub rules: Rules,
    /// How long `immutable` entries stay fresh without revalidation.
    pub immutable_ttl: Duration,
    /// When set, a stored entry this old or younger (since it was stored or
    /// last revalidated) may be served if the origin fails.
    pub stale_if_error: Option<Duration>,
    /// An always-revalidate (`revalidate` mode) entry whose response had no
    /// `ETag` and no `Last-Modified` is served without asking the origin
    /// while it was downloaded less than this long ago: a revalidation
    /// could only download it whole again. Zero: never.
    pub unvalidated_window: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            rules: Rules::default(),
            immutable_ttl: DEFAULT_IMMUTABLE_TTL,
            stale_if_error: None,
            unvalidated_window: DEFAULT_UNVALIDATED_WINDOW,
        }
    }
}

/// A request that may use the cache.
#[derive(Debug, Clone)]
pub struct Cacheable {
    /// Where it is stored.
    pub key: CacheKey,
    /// The rule mode that applies.
    pub mode: Mode,
}

/// What a stored entry is worth for a request.
#[derive(Debug)]
pub enum Freshness {
    /// Serve it; these are the response head to send (with `Age`).
    Fresh(response::Parts),
    /// Serve it without revalidating: an index whose origin sends no
    /// validators, downloaded within the unvalidated window (see the module
    /// documentation); the response head to send, and its age.
    Unvalidated(response::Parts, Duration),
    /// Revalidate first: send this conditional request to the origin.
    Stale(request::Parts),
    /// The stored variant does not match the request's `Vary` headers.
    VaryMismatch,
}

/// Whether to store an origin response.
#[derive(Debug)]
pub enum StoreDecision {
    /// Store it; `meta` is ready for the store's miss handler (`Storage::miss`).
    Store(Box<Meta>),
    /// Do not store it.
    NoStore(NoStoreReason),
}

/// The outcome of a revalidation.
#[derive(Debug)]
pub enum Revalidated {
    /// 304 matched the stored entry: keep the body, use the refreshed
    /// metadata and send this response head.
    NotModified {
        /// Refreshed metadata to write back with `Storage::update_meta`.
        meta: Box<Meta>,
        /// Response head for the client.
        response: response::Parts,
    },
    /// The origin sent a new body (or a 304 for another variant): handle the
    /// response like a miss.
    Modified,
}

/// The caching policy: rules plus http-cache-semantics.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    options: CacheOptions,
}

/// Headers a client uses to make its own request conditional or partial;
/// the cache answers those itself and never forwards them on a lookup.
const CLIENT_CONDITIONALS: [HeaderName; 6] = [
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
    RANGE,
];

/// Headers the origin addressed to one client, never stored.
const NOT_STORED: [&str; 2] = ["set-cookie", "set-cookie2"];

/// Connection-specific headers never sent from the cache (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Policy {
    /// Builds the policy (a shared cache, in RFC 9111 terms).
    pub fn new(config: PolicyConfig) -> Self {
        Policy {
            config,
            options: CacheOptions {
                shared: true,
                ..CacheOptions::default()
            },
        }
    }

    /// The settings this policy was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Decides whether a request may use the cache.
    pub fn classify(&self, req: &request::Parts) -> Result<Cacheable, BypassReason> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(BypassReason::MethodNotCacheable);
        }
        if req.headers.contains_key(AUTHORIZATION) {
            return Err(BypassReason::Authorization);
        }
        let key = CacheKey::from_request(req).map_err(|_| BypassReason::Unkeyable)?;
        let mode = self.config.rules.mode_for(key.hostname(), key.path());
        if mode == Mode::Bypass {
            return Err(BypassReason::Rule);
        }
        Ok(Cacheable { key, mode })
    }

    /// Whether what is stored for `req` may go to the shared tier, for
    /// other tenants: never a response to a request with credentials
    /// (`Authorization`, which bypasses the cache anyway, or cookies).
    /// Responses that are `private` or `no-store` are never stored at all
    /// ([`Policy::on_response`]), so they never get this far.
    pub fn shareable(&self, req: &request::Parts) -> bool {
        !req.headers.contains_key(AUTHORIZATION) && !req.headers.contains_key(COOKIE)
    }

    /// The request as the cache sees it for lookup and for fetching a body
    /// to store: always `GET` (a stored `GET` answers `HEAD`), without the
    /// client's own conditionals and ranges, and for `immutable` entries
    /// without client cache directives.
    pub fn lookup_request(&self, req: &request::Parts, mode: Mode) -> request::Parts {
        let mut parts = http::Request::builder()
            .method(Method::GET)
            .uri(req.uri.clone())
            .version(req.version)
            .body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
        let mut headers = req.headers.clone();
        for name in &CLIENT_CONDITIONALS {
            headers.remove(name);
        }
        if mode == Mode::Immutable {
            headers.remove(CACHE_CONTROL);
            headers.remove(PRAGMA);
        }
        parts.headers = headers;
        parts
    }

    /// Evaluates a stored entry for a request at `now`.
    pub fn freshness(&self, req: &request::Parts, meta: &Meta, now: SystemTime) -> Freshness {
        let lookup = self.lookup_request(req, meta.mode);
        match meta.policy.before_request(&lookup, now) {
            BeforeRequest::Fresh(mut parts) => {
                // Entries stored before cookies were left out.
                strip_not_stored(&mut parts.headers);
                Freshness::Fresh(parts)
            }
            BeforeRequest::Stale {
                request,
                matches: true,
            } => match self.unvalidated_age(meta, now) {
                Some(age) => Freshness::Unvalidated(stored_response(meta, now), age),
                None => Freshness::Stale(request),
            },
            BeforeRequest::Stale { matches: false, .. } => Freshness::VaryMismatch,
        }
    }

    /// Whether the response stored as `meta` may answer `req` as far as
    /// `Vary` goes (its freshness aside).
    pub fn selects(&self, req: &request::Parts, meta: &Meta) -> bool {
        !matches!(
            self.freshness(req, meta, SystemTime::now()),
            Freshness::VaryMismatch
        )
    }

    /// The key of the variant of `key` that `req` selects, given the
    /// stored response `stored` it did not match: the request's values of
    /// the headers `stored` varies on, hashed into the key (see `key.rs`).
    /// `None` when `stored` names no header to vary on (`Vary: *` or none).
    pub fn variant_key(
        &self,
        key: &CacheKey,
        stored: &Meta,
        req: &request::Parts,
    ) -> Option<CacheKey> {
        let mut names: Vec<String> = comma_values(&stored.headers, &VARY)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() || names.iter().any(|n| n == "*") {
            return None;
        }
        names.sort();
        names.dedup();
        let mut selector = String::new();
        for name in names {
            let values: Vec<String> = req
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            selector.push_str(&format!("{name}:{}\n", values.join(", ")));
        }
        Some(key.variant(&selector))
    }

    /// Decides whether to store an origin response to `req`, received at
    /// `now`, and prepares its metadata.
    pub fn on_response(
        &self,
        cacheable: &Cacheable,
        req: &request::Parts,
        res: &response::Parts,
        now: SystemTime,
    ) -> StoreDecision {
        let reason = if cacheable.mode == Mode::Bypass {
            Some(NoStoreReason::Rule)
        } else if req.method == Method::HEAD {
            Some(NoStoreReason::HeadRequest)
        } else if req.headers.contains_key(RANGE) {
            Some(NoStoreReason::RangeRequest)
        } else if res.status != StatusCode::OK {
            Some(NoStoreReason::Status(res.status.as_u16()))
        } else if has_directive(&req.headers, "no-store") {
            Some(NoStoreReason::NoStoreRequest)
        } else if has_directive(&res.headers, "no-store") {
            Some(NoStoreReason::NoStoreResponse)
        } else if has_directive(&res.headers, "private") {
            Some(NoStoreReason::PrivateResponse)
        } else if comma_values(&res.headers, &VARY).any(|v| v == "*") {
            Some(NoStoreReason::VaryStar)
        } else if cacheable.mode != Mode::Immutable && sets_cookie(&res.headers) {
            Some(NoStoreReason::SetsCookie)
        } else {
            None
        };
        if let Some(reason) = reason {
            return StoreDecision::NoStore(reason);
        }
        let lookup = self.lookup_request(req, cacheable.mode);
        let view = self.freshness_view(cacheable.mode, res);
        let policy = CachePolicy::new_options(&lookup, &view, now, self.options);
        if !policy.is_storable() {
            return StoreDecision::NoStore(NoStoreReason::NotStorable);
        }
        let mut headers = res.headers.clone();
        strip_not_stored(&mut headers);
        StoreDecision::Store(Box::new(Meta {
            url: cacheable.key.url().to_owned(),
            status: res.status,
            headers,
            policy,
            mode: cacheable.mode,
            stored_at_ms: unix_ms(now),
            size: 0,
            integrity: String::new(),
            check: None,
            blocks: None,
        }))
    }

    /// Applies the origin's answer to a revalidation request.
    ///
    /// `revalidation` is the request that was sent (from
    /// [`Freshness::Stale`]); `res` is the origin's response head, received
    /// at `now`.
    pub fn on_revalidated(
        &self,
        revalidation: &request::Parts,
        meta: &Meta,
        res: &response::Parts,
        now: SystemTime,
    ) -> Revalidated {
        if res.status != StatusCode::NOT_MODIFIED {
            return Revalidated::Modified;
        }
        let mut view = self.freshness_view(meta.mode, res);
        // A 304 answers the conditional request we sent for this very entry.
        // Some origins (Python's http.server among them) send it without
        // the validators; http-cache-semantics then cannot tie it to the
        // stored response (RFC 9111 §4.3.4 selects by validator) and calls
        // it modified, which would download the body again. A 304 that
        // carries no validator of its own refreshes the entry it answers.
        if !view.headers.contains_key(ETAG) && !view.headers.contains_key(LAST_MODIFIED) {
            for name in [ETAG, LAST_MODIFIED] {
                if let Some(value) = meta.headers.get(&name) {
                    view.headers.insert(name, value.clone());
                }
            }
        }
        match meta.policy.after_response(revalidation, &view, now) {
            AfterResponse::NotModified(policy, mut response) => {
                strip_not_stored(&mut response.headers);
                let mut headers = meta.headers.clone();
                strip_not_stored(&mut headers);
                for name in res.headers.keys() {
                    let excluded = [
                        CONTENT_LENGTH,
                        CONTENT_ENCODING,
                        CONTENT_RANGE,
                        TRANSFER_ENCODING,
                    ]
                    .contains(name)
                        || HOP_BY_HOP.contains(&name.as_str())
                        || NOT_STORED.contains(&name.as_str());
                    if !excluded {
                        headers.remove(name);
                        for value in res.headers.get_all(name) {
                            headers.append(name.clone(), value.clone());
                        }
                    }
                }
                let meta = Meta {
                    headers,
                    policy,
                    stored_at_ms: unix_ms(now),
                    ..meta.clone()
                };
                Revalidated::NotModified {
                    meta: Box::new(meta),
                    response,
                }
            }
            AfterResponse::Modified(..) => Revalidated::Modified,
        }
    }

    /// The response head for serving a stored entry because the origin
    /// failed, if stale-if-error is enabled and the entry went stale at most
    /// that long ago (RFC 5861: the window runs from the end of freshness,
    /// so an entry fresh for a day is still served an hour after that day).
    pub fn stale_if_error(&self, meta: &Meta, now: SystemTime) -> Option<response::Parts> {
        let limit = self.config.stale_if_error?;
        // The freshness left when it was stored (or last revalidated) ends
        // where staleness begins; http-cache-semantics keeps the lifetime
        // itself private.
        let stored = meta.stored_at();
        let stale_since = stored + meta.policy.time_to_live(stored);
        if now.duration_since(stale_since).unwrap_or_default() > limit {
            return None;
        }
        Some(stored_response(meta, now))
    }

    /// How long ago an always-revalidate entry without validators was
    /// downloaded, if that is within the unvalidated window (a
    /// revalidation could only download it whole again).
    fn unvalidated_age(&self, meta: &Meta, now: SystemTime) -> Option<Duration> {
        let window = self.config.unvalidated_window;
        let validated = [ETAG, LAST_MODIFIED]
            .iter()
            .any(|name| meta.headers.contains_key(name));
        if window.is_zero() || meta.mode != Mode::Revalidate || validated {
            return None;
        }
        // A clock that went back counts as just downloaded.
        let age = now.duration_since(meta.stored_at()).unwrap_or_default();
        (age < window).then_some(age)
    }

    /// The response headers the `CachePolicy` is built from, with the rule
    /// mode's freshness applied (only to complete `200`/`304` answers).
    fn freshness_view(&self, mode: Mode, res: &response::Parts) -> response::Parts {
        let mut view = http::Response::new(()).into_parts().0;
        view.status = res.status;
        view.version = res.version;
        view.headers = res.headers.clone();
        strip_not_stored(&mut view.headers);
        let forced = match mode {
            Mode::Immutable => Some(format!(
                "public, max-age={}, immutable",
                self.config.immutable_ttl.as_secs()
            )),
            Mode::Revalidate => Some("no-cache".to_owned()),
            Mode::Default | Mode::Bypass => None,
        };
        let applies = matches!(res.status, StatusCode::OK | StatusCode::NOT_MODIFIED);
        if let (Some(cc), true) = (forced, applies) {
            let headers = &mut view.headers;
            headers.remove(EXPIRES);
            headers.remove(PRAGMA);
            if let Ok(value) = HeaderValue::from_str(&cc) {
                headers.insert(CACHE_CONTROL, value);
            }
        }
        view
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(PolicyConfig::default())
    }
}

/// The stored response as it is sent without asking the origin: its
/// headers as stored (no hop-by-hop ones), with `Age`.
fn stored_response(meta: &Meta, now: SystemTime) -> response::Parts {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = meta.status;
    let mut headers = meta.headers.clone();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    strip_not_stored(&mut headers);
    let age = meta.policy.age(now).as_secs();
    headers.insert(http::header::AGE, HeaderValue::from(age));
    parts.headers = headers;
    parts
}

/// Removes what the origin addressed to one client ([`NOT_STORED`]).
fn strip_not_stored(headers: &mut HeaderMap) {
    for name in NOT_STORED {
        headers.remove(name);
    }
}

/// Whether the origin addressed a cookie to the client ([`NOT_STORED`]).
fn sets_cookie(headers: &HeaderMap) -> bool {
    NOT_STORED.iter().any(|name| headers.contains_key(*name))
}

fn comma_values<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
}

/// Whether `Cache-Control` carries a directive (with or without a value).
fn has_directive(headers: &HeaderMap, directive: &str) -> bool {
    comma_values(headers, &CACHE_CONTROL)
        .any(|d| d.split('=').next().map(str::trim) == Some(directive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};

    fn req(uri: &str) -> request::Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn res(headers: &[(&str, &str)]) -> response::Parts {
        let mut b = Response::builder().status(200);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn store(policy: &Policy, r: &request::Parts, s: &response::Parts, now: SystemTime) -> Meta {
        let c = policy.classify(r).unwrap();
        match policy.on_response(&c, r, s, now) {
            StoreDecision::Store(meta) => *meta,
            StoreDecision::NoStore(reason) => panic!("not stored: {reason}"),
        }
    }

    const T0: Duration = Duration::from_secs(1_700_000_000);

    #[test]
    fn max_age_is_fresh_until_it_expires() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://files.example.test/assets/file.txt");
        let meta = store(&p, &r, &res(&[("cache-control", "max-age=60")]), now);
        let at = |secs| now + Duration::from_secs(secs);
        assert!(matches!(
            p.freshness(&r, &meta, at(59)),
            Freshness::Fresh(_)
        ));
        assert!(matches!(
            p.freshness(&r, &meta, at(61)),
            Freshness::Stale(_)
        ));
    }

    #[test]
    fn no_store_and_private_are_not_stored() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://files.example.test/assets/file.txt");
        let c = p.classify(&r).unwrap();
        for (cc, want) in [
            ("no-store", NoStoreReason::NoStoreResponse),
            ("private, max-age=60", NoStoreReason::PrivateResponse),
        ] {
            match p.on_response(&c, &r, &res(&[("cache-control", cc)]), now) {
                StoreDecision::NoStore(reason) => assert_eq!(reason, want),
                StoreDecision::Store(_) => panic!("{cc} was stored"),
            }
        }
    }

    #[test]
    fn a_response_setting_a_cookie_is_stored_only_under_an_immutable_rule() {
        let rules = Rules::new(&[crate::rules::RuleConfig {
            domain: None,
            path: "/artifacts/".into(),
            mode: Mode::Immutable,
        }])
        .unwrap();
        let p = Policy::new(PolicyConfig {
            rules,
            ..PolicyConfig::default()
        });
        let now = SystemTime::UNIX_EPOCH + T0;
        let s = res(&[
            ("cache-control", "public, max-age=300"),
            ("set-cookie", "session=first-client"),
        ]);
        for (url, mode) in [
            ("https://files.example.test/account/page", Mode::Default),
            (
                "https://deb.example.test/debian/dists/stable/Release",
                Mode::Revalidate,
            ),
        ] {
            let r = req(url);
            let c = p.classify(&r).unwrap();
            assert_eq!(c.mode, mode, "{url}");
            match p.on_response(&c, &r, &s, now) {
                StoreDecision::NoStore(reason) => assert_eq!(reason, NoStoreReason::SetsCookie),
                StoreDecision::Store(_) => panic!("{url}: stored with its cookie's body"),
            }
        }
        for url in [
            "https://files.example.test/artifacts/tool-1.0.tar.gz",
            "https://deb.example.test/debian/pool/main/h/hello/hello_1.0_amd64.deb",
        ] {
            let meta = store(&p, &req(url), &s, now);
            assert!(!meta.headers.contains_key("set-cookie"), "{url}");
        }
    }

    #[test]
    fn immutable_rule_makes_a_header_less_deb_fresh() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://deb.example.test/debian/pool/main/h/hello/hello_1.0_amd64.deb");
        assert_eq!(p.classify(&r).unwrap().mode, Mode::Immutable);
        let meta = store(&p, &r, &res(&[]), now);
        let later = now + Duration::from_secs(30 * 24 * 3600);
        assert!(matches!(p.freshness(&r, &meta, later), Freshness::Fresh(_)));
        // A client's max-age=0 does not force a download of a versioned file.
        let mut nocache = r.clone();
        nocache
            .headers
            .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
        assert!(matches!(
            p.freshness(&nocache, &meta, later),
            Freshness::Fresh(_)
        ));
    }

    #[test]
    fn revalidate_rule_makes_release_stale_despite_max_age() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://deb.example.test/debian/dists/stable/Release");
        let s = res(&[("cache-control", "max-age=3600"), ("etag", "\"r1\"")]);
        let meta = store(&p, &r, &s, now);
        match p.freshness(&r, &meta, now + Duration::from_secs(1)) {
            Freshness::Stale(reval) => {
                assert_eq!(reval.headers.get(IF_NONE_MATCH).unwrap(), "\"r1\"");
            }
            other => panic!("expected stale, got {other:?}"),
        }
    }

    #[test]
    fn not_modified_refreshes_metadata() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://files.example.test/assets/file.txt");
        let s = res(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let meta = store(&p, &r, &s, now);
        let later = now + Duration::from_secs(120);
        let Freshness::Stale(reval) = p.freshness(&r, &meta, later) else {
            panic!("should be stale");
        };
        let mut not_modified = res(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        not_modified.status = StatusCode::NOT_MODIFIED;
        let Revalidated::NotModified { meta: fresh, .. } =
            p.on_revalidated(&reval, &meta, &not_modified, later)
        else {
            panic!("304 should match");
        };
        let after = later + Duration::from_secs(30);
        assert!(matches!(
            p.freshness(&r, &fresh, after),
            Freshness::Fresh(_)
        ));
    }

    #[test]
    fn not_modified_without_last_modified_still_refreshes() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://files.example.test/assets/file.txt");
        let lm = "Tue, 14 Nov 2023 22:13:20 GMT";
        let s = res(&[("cache-control", "max-age=60"), ("last-modified", lm)]);
        let meta = store(&p, &r, &s, now);
        let later = now + Duration::from_secs(120);
        let Freshness::Stale(reval) = p.freshness(&r, &meta, later) else {
            panic!("should be stale");
        };
        assert_eq!(reval.headers.get(IF_MODIFIED_SINCE).unwrap(), lm);
        // What Python's http.server sends: a bare 304 with a Date.
        let mut not_modified = res(&[("date", "Tue, 14 Nov 2023 22:15:20 GMT")]);
        not_modified.status = StatusCode::NOT_MODIFIED;
        let Revalidated::NotModified { meta: fresh, .. } =
            p.on_revalidated(&reval, &meta, &not_modified, later)
        else {
            panic!("a 304 without validators should refresh the entry");
        };
        assert_eq!(fresh.headers.get(LAST_MODIFIED).unwrap(), lm);
        assert!(matches!(
            p.freshness(&r, &fresh, later + Duration::from_secs(30)),
            Freshness::Fresh(_)
        ));
    }

    #[test]
    fn not_modified_with_another_strong_etag_is_modified() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://files.example.test/assets/file.txt");
        let s = res(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let meta = store(&p, &r, &s, now);
        let later = now + Duration::from_secs(120);
        let Freshness::Stale(reval) = p.freshness(&r, &meta, later) else {
            panic!("should be stale");
        };
        let mut not_modified = res(&[("etag", "\"v2\"")]);
        not_modified.status = StatusCode::NOT_MODIFIED;
        assert!(matches!(
            p.on_revalidated(&reval, &meta, &not_modified, later),
            Revalidated::Modified
        ));
    }

    #[test]
    fn vary_mismatch_is_detected() {
        let p = Policy::default();
        let now = SystemTime::UNIX_EPOCH + T0;
        let mut r = req("https://files.example.test/assets/file.txt");
        r.headers
            .insert("accept-encoding", HeaderValue::from_static("gzip"));
        let s = res(&[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")]);
        let meta = store(&p, &r, &s, now);
        assert!(matches!(p.freshness(&r, &meta, now), Freshness::Fresh(_)));
        let mut other = r.clone();
        other
            .headers
            .insert("accept-encoding", HeaderValue::from_static("br"));
        assert!(matches!(
            p.freshness(&other, &meta, now),
            Freshness::VaryMismatch
        ));
    }

    #[test]
    fn stale_if_error_respects_its_limit() {
        let p = Policy::new(PolicyConfig {
            stale_if_error: Some(Duration::from_secs(600)),
            ..PolicyConfig::default()
        });
        let now = SystemTime::UNIX_EPOCH + T0;
        let r = req("https://files.example.test/assets/file.txt");
        let meta = store(&p, &r, &res(&[("cache-control", "max-age=1")]), now);
        assert!(p
            .stale_if_error(&meta, now + Duration::from_secs(500))
            .is_some());
        assert!(p
            .stale_if_error(&meta, now + Duration::from_secs(700))
            .is_none());
        assert!(Policy::default().stale_if_error(&meta, now).is_none());
        // The window starts when freshness ends, not when it was stored.
        let day = Duration::from_secs(24 * 3600);
        let meta = store(&p, &r, &res(&[("cache-control", "max-age=86400")]), now);
        for (after, served) in [(500, true), (700, false)] {
            let at = now + day + Duration::from_secs(after);
            assert_eq!(p.stale_if_error(&meta, at).is_some(), served, "{after}s");
        }
    }

    #[test]
    fn only_requests_without_credentials_or_cookies_are_shared() {
        let p = Policy::default();
        let r = req("https://files.example.test/pool/a.deb");
        assert!(p.shareable(&r));
        for (name, value) in [(AUTHORIZATION, "Bearer t"), (COOKIE, "session=one")] {
            let mut r = r.clone();
            r.headers.insert(name, HeaderValue::from_static(value));
            assert!(!p.shareable(&r), "{value}");
        }
    }

    #[test]
    fn authorised_and_non_get_requests_bypass() {
        let p = Policy::default();
        let mut r = req("https://files.example.test/x");
        r.headers
            .insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert_eq!(p.classify(&r).unwrap_err(), BypassReason::Authorization);
        let post = Request::post("https://files.example.test/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            p.classify(&post).unwrap_err(),
            BypassReason::MethodNotCacheable
        );
    }
}
