//! The caching path as the proxy drives it: a small state machine over
//! [`Store`] (I/O) and [`Policy`] (decisions). It reaches the store's
//! entries and bodies through the [`Storage`] trait (lookup, then a hit or
//! a miss handler), and uses the store itself only for its counters and
//! limits.
//!
//! ```text
//! lookup(req, now) ─┬─ Bypass(reason) ─────────────► forward untouched
//!                   ├─ Hit (fresh, or an index without validators
//!                   │       within the unvalidated window) ─► conditionals / range → serve body
//!                   ├─ Stale ─► send stale.revalidation upstream
//!                   │            ├─ 304 → revalidated() → NotModified(Hit) → serve
//!                   │            ├─ 200 → (as Miss) store_response()
//!                   │            └─ error → stale_if_error() → Some(Hit) → serve
//!                   └─ Miss ──► store.single_flight(key, fetch) where fetch:
//!                                 forward lookup_request upstream,
//!                                 store_response() → Store(writer) | NoStore(reason)
//!                                 tee body: client + writer.write(); writer.commit()
//! ```
//!
//! Every state and reason `Display`s itself for the access log. Time is a
//! parameter everywhere, so freshness is testable without sleeping.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::{request, response};

use crate::check::block_checks;
use crate::conditional::content_length;
use crate::entry::Entry;
use crate::error::Result;
use crate::key::CacheKey;
use crate::lock::Flight;
use crate::policy::{Cacheable, Freshness, Policy, Revalidated, StoreDecision};
use crate::read::Body;
use crate::reason::{BypassReason, HitReason, MissReason, NoStoreReason};
use crate::rules::Mode;
use crate::shared::{Fleet, FleetLead, Shared};
use crate::storage::Storage;
use crate::store::Store;
use crate::write::Writer;

/// A fresh entry ready to serve.
#[derive(Debug)]
pub struct Hit {
    /// The entry (for ranges: `store.range(&hit.entry, …)`).
    pub entry: Entry,
    /// Response head to send: status and headers with `Age`.
    pub response: response::Parts,
    /// The body, verified (small) or verifying as it streams (large).
    pub body: Body,
    /// Why it is served without asking the origin (for the log).
    pub reason: HitReason,
}

/// A stored entry that must be revalidated before use.
#[derive(Debug)]
pub struct Stale {
    /// The entry.
    pub entry: Entry,
    /// The conditional request to send to the origin.
    pub revalidation: request::Parts,
}

/// Nothing usable is stored.
#[derive(Debug, Clone)]
pub struct Miss {
    /// Key to store the origin's answer under.
    pub key: CacheKey,
    /// Rule mode in force.
    pub mode: Mode,
    /// Why.
    pub reason: MissReason,
    /// The request to send upstream: the client's, as `GET`, without its
    /// conditionals and `Range`, so a storable full body comes back. For a
    /// client `Range` request the proxy may instead forward it untouched and
    /// not store.
    pub upstream: request::Parts,
    /// This runner's download of `key` for the fleet, if it leads it: held
    /// until the answer is stored and uploaded, dropped (the fleet lock
    /// released) as soon as it will not be.
    _lead: Option<Arc<FleetLead>>,
}

/// What [`Cache::find`] found.
enum Found {
    Entry(Box<Entry>),
    /// A miss; with this runner's lead of the key for the fleet.
    Miss(Option<Arc<FleetLead>>),
}

/// Result of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// Skip the cache.
    Bypass(BypassReason),
    /// Serve from the cache.
    Hit(Box<Hit>),
    /// Revalidate, then serve or replace.
    Stale(Box<Stale>),
    /// Fetch (under single-flight) and store.
    Miss(Box<Miss>),
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Bypass(reason) => write!(f, "bypass ({reason})"),
            Lookup::Hit(_) => f.write_str("hit"),
            Lookup::Stale(_) => f.write_str("stale, revalidating"),
            Lookup::Miss(miss) => write!(f, "miss ({})", miss.reason),
        }
    }
}

/// Result of [`Cache::store_response`].
#[derive(Debug)]
pub enum StoreStart {
    /// Tee the body into this writer, then commit.
    Store(Box<Writer>),
    /// Forward without storing.
    NoStore(NoStoreReason),
}

/// Result of [`Cache::revalidated`].
#[derive(Debug)]
pub enum Revalidation {
    /// The origin said 304: metadata refreshed, serve this hit.
    NotModified(Box<Hit>),
    /// The origin sent a new body (or the stored one vanished): treat the
    /// response like a miss and store it.
    Modified,
}

/// Store plus policy, and the shared tier behind the store when there is
/// one.
#[derive(Debug, Clone)]
pub struct Cache {
    store: Store,
    policy: Policy,
    shared: Option<Shared>,
}

impl Cache {
    /// Combines a store and a policy.
    pub fn new(store: Store, policy: Policy) -> Self {
        Cache {
            store,
            policy,
            shared: None,
        }
    }

    /// Puts `shared` behind the store: local misses look there before the
    /// origin, and shareable commits are uploaded to it.
    pub fn with_shared(mut self, shared: Shared) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The shared tier, if there is one.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// The committed entry for `key`: the local store's, else one the
    /// shared tier has, filled into the local store (checked against its
    /// content address). A small body is filled before it is returned; a
    /// large one is filled by a task that leads the key's single-flight,
    /// and `None` sends the caller, as a miss, to read along with it (see
    /// `tail.rs`). The shared tier's failures are misses. A key already
    /// being fetched on this host is left to that fetch (the caller
    /// follows it).
    ///
    /// With `lead`, a key nobody in the fleet has is claimed for the fleet
    /// (`Shared::claim`): this runner's download is the one the others
    /// wait for. Only for requests whose answer is stored and shared
    /// ([`Cache::leads_for_fleet`]); the lead comes back with the miss,
    /// under the key it was claimed for (a `Vary` variant's own key).
    async fn find(&self, key: &CacheKey, lead: bool) -> Result<Found> {
        if let Some(entry) = self.store.lookup(key).await? {
            return Ok(Found::Entry(Box::new(entry)));
        }
        let Some(shared) = &self.shared else {
            return Ok(Found::Miss(None));
        };
        let Flight::Leader(guard) = self.store.lock(key) else {
            return Ok(Found::Miss(None));
        };
        if let Some(entry) = self.store.lookup(key).await? {
            guard.finish(true);
            return Ok(Found::Entry(Box::new(entry)));
        }
        let mut waited = false;
        let meta = match shared.lookup(key).await {
            Some(meta) => meta,
            None if !lead => {
                guard.finish(false);
                return Ok(Found::Miss(None));
            }
            // Nobody in the fleet has it: download it for the fleet, or
            // wait for the runner that does.
            None => match shared.lead_or_wait(key).await {
                Fleet::Ready(meta) => {
                    waited = true;
                    *meta
                }
                Fleet::Lead(lead) => {
                    guard.finish(false);
                    return Ok(Found::Miss(Some(lead)));
                }
                Fleet::Alone => {
                    guard.finish(false);
                    return Ok(Found::Miss(None));
                }
            },
        };
        let Some(body) = shared.open_body(&meta, waited).await else {
            guard.finish(false);
            return Ok(Found::Miss(None));
        };
        let mut writer = match self.store.miss(key, meta.clone()).await {
            Ok(writer) => writer,
            Err(e) => {
                guard.finish(false);
                return Err(e);
            }
        };
        // A large body streams to the requests that follow this fill
        // (the caller among them, as a miss) while it is written, each
        // block checked against what the storing runner recorded.
        let blocks = (meta.size > self.store.config().verify_before_serve)
            .then(|| block_checks(meta.blocks.as_deref(), meta.size))
            .flatten();
        if let Some(blocks) = blocks {
            writer.expect_blocks(meta.size, blocks);
            guard.publish(writer.tail());
            let shared = shared.clone();
            tokio::spawn(async move {
                let filled = shared.fill(writer, &meta, body).await;
                guard.finish(filled.is_ok());
            });
            return Ok(Found::Miss(None));
        }
        let filled = shared.fill(writer, &meta, body).await.ok();
        guard.finish(filled.is_some());
        Ok(filled.map_or(Found::Miss(None), |e| Found::Entry(Box::new(e))))
    }

    /// The store (stats, verify, gc, purge, single-flight, ranges).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether a miss of `req` may download for the fleet: a whole `GET`
    /// whose answer would be shared (a range, a `HEAD` or a request with
    /// cookies is fetched but never uploaded, and the fleet would wait on
    /// it for nothing).
    fn leads_for_fleet(&self, req: &request::Parts) -> bool {
        req.method == http::Method::GET
            && !req.headers.contains_key(http::header::RANGE)
            && self.policy.shareable(req)
    }

    /// Looks a request up at `now`.
    pub async fn lookup(&self, req: &request::Parts, now: SystemTime) -> Result<Lookup> {
        let counters = self.store.counters();
        let cacheable = match self.policy.classify(req) {
            Ok(c) => c,
            Err(reason) => {
                counters.bypasses.fetch_add(1, Ordering::Relaxed);
                return Ok(Lookup::Bypass(reason));
            }
        };
        let miss_led = |key: &CacheKey, reason, lead| {
            counters.misses.fetch_add(1, Ordering::Relaxed);
            Ok(Lookup::Miss(Box::new(Miss {
                upstream: self.policy.lookup_request(req, cacheable.mode),
                key: key.clone(),
                mode: cacheable.mode,
                reason,
                _lead: lead,
            })))
        };
        let miss = |key: &CacheKey, reason| miss_led(key, reason, None);
        let lead = self.leads_for_fleet(req);
        let entry = match self.find(&cacheable.key, lead).await? {
            Found::Entry(entry) => *entry,
            Found::Miss(led) => return miss_led(&cacheable.key, MissReason::NotCached, led),
        };
        let (entry, freshness) = match self.policy.freshness(req, &entry.meta, now) {
            // Another variant is stored under the plain key: look for this
            // request's own (see `key.rs`).
            Freshness::VaryMismatch => {
                let Some(variant) = self.policy.variant_key(&cacheable.key, &entry.meta, req)
                else {
                    return miss(&cacheable.key, MissReason::VaryMismatch);
                };
                let entry = match self.find(&variant, lead).await? {
                    Found::Entry(entry) => *entry,
                    Found::Miss(led) => return miss_led(&variant, MissReason::VaryMismatch, led),
                };
                let freshness = self.policy.freshness(req, &entry.meta, now);
                (entry, freshness)
            }
            freshness => (entry, freshness),
        };
        let (response, reason) = match freshness {
            Freshness::Fresh(response) => (response, HitReason::Fresh),
            Freshness::Unvalidated(response, age) => {
                let age_secs = age.as_secs();
                (response, HitReason::Unvalidated { age_secs })
            }
            Freshness::Stale(revalidation) => {
                counters.stale.fetch_add(1, Ordering::Relaxed);
                return Ok(Lookup::Stale(Box::new(Stale {
                    entry,
                    revalidation,
                })));
            }
            Freshness::VaryMismatch => return miss(&entry.key, MissReason::VaryMismatch),
        };
        match self.store.hit(&entry).await {
            Ok(body) => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                // The fleet's copy is in use: keep it from `gc`.
                if let Some(shared) = self.shared.as_ref().filter(|_| self.policy.shareable(req)) {
                    shared.used(&entry.key);
                }
                Ok(Lookup::Hit(Box::new(Hit {
                    entry,
                    response,
                    body,
                    reason,
                })))
            }
            Err(e) if e.is_corrupt() => miss(&entry.key, MissReason::Corrupt),
            Err(e) => Err(e),
        }
    }

    /// Where the origin's answer to `req` is stored: under the plain key,
    /// unless a stored response of another variant holds it (see `key.rs`).
    async fn store_key(
        &self,
        cacheable: &Cacheable,
        req: &request::Parts,
        now: SystemTime,
    ) -> Result<CacheKey> {
        let Some(stored) = self.store.lookup(&cacheable.key).await? else {
            return Ok(cacheable.key.clone());
        };
        match self.policy.freshness(req, &stored.meta, now) {
            Freshness::VaryMismatch => Ok(self
                .policy
                .variant_key(&cacheable.key, &stored.meta, req)
                .unwrap_or_else(|| cacheable.key.clone())),
            _ => Ok(cacheable.key.clone()),
        }
    }

    /// Decides whether to store the origin's response to `req` (received at
    /// `now`) and, if so, opens the writer.
    pub async fn store_response(
        &self,
        req: &request::Parts,
        res: &response::Parts,
        now: SystemTime,
    ) -> Result<StoreStart> {
        let cacheable = match self.policy.classify(req) {
            Ok(c) => c,
            Err(_) => return Ok(StoreStart::NoStore(NoStoreReason::Rule)),
        };
        self.store_cacheable(&cacheable, req, res, now).await
    }

    async fn store_cacheable(
        &self,
        cacheable: &Cacheable,
        req: &request::Parts,
        res: &response::Parts,
        now: SystemTime,
    ) -> Result<StoreStart> {
        match self.policy.on_response(cacheable, req, res, now) {
            StoreDecision::Store(meta) => {
                let limit = self.store.config().max_object;
                if let (Some(limit), Some(length)) = (limit, content_length(&meta.headers)) {
                    if length > limit {
                        return Ok(StoreStart::NoStore(NoStoreReason::TooLarge));
                    }
                }
                let key = self.store_key(cacheable, req, now).await?;
                let mut writer = self.store.miss(&key, *meta).await?;
                // The upload holds this runner's fleet lead of the key, if
                // any: the miss that claimed it may end before the commit.
                if let Some(shared) = self.shared.as_ref().filter(|_| self.policy.shareable(req)) {
                    writer.on_commit(shared.uploader(&key));
                }
                Ok(StoreStart::Store(Box::new(writer)))
            }
            // Nothing of it will be uploaded: the fleet lead, if any, goes
            // with the miss.
            StoreDecision::NoStore(reason) => Ok(StoreStart::NoStore(reason)),
        }
    }

    /// Applies the origin's answer to `stale.revalidation`, received at
    /// `now`. On 304 the stored metadata is refreshed (no body transfer).
    pub async fn revalidated(
        &self,
        stale: Stale,
        res: &response::Parts,
        now: SystemTime,
    ) -> Result<Revalidation> {
        match self
            .policy
            .on_revalidated(&stale.revalidation, &stale.entry.meta, res, now)
        {
            Revalidated::NotModified { meta, response } => {
                let entry = self.store.update_meta(&stale.entry, *meta).await?;
                // The new freshness serves the fleet too.
                if let Some(shared) = self
                    .shared
                    .as_ref()
                    .filter(|_| self.policy.shareable(&stale.revalidation))
                {
                    shared.upload(&entry);
                }
                match self.store.hit(&entry).await {
                    Ok(body) => Ok(Revalidation::NotModified(Box::new(Hit {
                        entry,
                        response,
                        body,
                        reason: HitReason::Fresh,
                    }))),
                    Err(e) if e.is_corrupt() => Ok(Revalidation::Modified),
                    Err(e) => Err(e),
                }
            }
            Revalidated::Modified => Ok(Revalidation::Modified),
        }
    }

    /// When the origin failed during revalidation: the stale entry as a hit,
    /// if stale-if-error allows it at `now`.
    pub async fn stale_if_error(&self, stale: Stale, now: SystemTime) -> Result<Option<Hit>> {
        let Some(response) = self.policy.stale_if_error(&stale.entry.meta, now) else {
            return Ok(None);
        };
        match self.store.hit(&stale.entry).await {
            Ok(body) => Ok(Some(Hit {
                entry: stale.entry,
                response,
                body,
                reason: HitReason::Fresh,
            })),
            Err(e) if e.is_corrupt() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn meta() -> crate::meta::Meta {
        let req = http::Request::get("https://files.example.test/a")
            .body(())
            .unwrap();
        let res = http::Response::new(());
        crate::meta::Meta {
            url: "https://files.example.test/a".into(),
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            policy: http_cache_semantics::CachePolicy::new(&req, &res),
            mode: Mode::Default,
            stored_at_ms: 0,
            size: 0,
            integrity: String::new(),
            check: None,
            blocks: None,
        }
    }

    /// A fill from the shared tier commits only the body its content
    /// address names.
    #[tokio::test]
    async fn a_write_expecting_a_content_address_stores_only_that_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default())
            .await
            .unwrap();
        let key = CacheKey::parse("GET https://files.example.test/a").unwrap();
        let good = cacache::Integrity::from(b"the body");

        let mut writer = store.miss(&key, meta()).await.unwrap();
        writer.expect_address(good.clone());
        writer.write(b"the bodY").await.unwrap();
        let err = writer.commit().await.unwrap_err();
        assert!(
            matches!(err, crate::error::Error::AddressMismatch { .. }),
            "{err}"
        );
        assert!(store.lookup(&key).await.unwrap().is_none());
        assert_eq!(store.stats().bytes, 0);

        let mut writer = store.miss(&key, meta()).await.unwrap();
        writer.expect_address(good.clone());
        writer.write(b"the body").await.unwrap();
        let entry = writer.commit().await.unwrap();
        assert!(entry.integrity.matches(&good).is_some());
    }
}
