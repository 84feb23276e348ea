//! The shared tier: a second cache level on S3-compatible object storage,
//! shared by a fleet of runners, each with its own disk cache in front.
//!
//! What is stored, under the configured prefix:
//! - `content/sha256/<hex>`: bodies, by their SHA-256, so a body is stored
//!   once across the fleet (an upload first asks whether it is there);
//! - `index/<hex of the key's SHA-256>`: one small JSON object per cache
//!   key: the key and its [`Meta`] (the response head, the freshness
//!   policy with its validators, the time it was stored or last
//!   revalidated, the content address). A runner's revalidation rewrites
//!   it, so the next runner starts from that state.
//!
//! The tier never stands between a client and the origin:
//! - a lookup ([`Shared::lookup`]) or a fill ([`Shared::fill`]) that fails
//!   or takes longer than the configured timeout is an error the caching
//!   path takes for a miss (counted, logged), and the origin answers;
//! - a fill writes the object into the local store through a [`Writer`]
//!   that only commits a body hashing to the content address it was
//!   fetched under: a corrupt or truncated object is never stored, and is
//!   deleted from the bucket so the origin's copy replaces it on the next
//!   upload. Requests reading along with a fill (`tail.rs`) get only
//!   blocks that match the checksums the storing runner recorded, and go
//!   on from the origin at the first that does not, or when the store
//!   fails mid-body;
//! - uploads run in one background task fed by a bounded queue: a commit
//!   enqueues and returns ([`Committed`]); a full queue drops the upload
//!   (counted).
//!
//! - `lock/<hex of the key's SHA-256>`: the fleet-wide single download.
//!   A runner that misses a key the tier does not have creates its lock
//!   object with a conditional write ([`Shared::lead_or_wait`]) and
//!   downloads it while its [`FleetLead`] renews the lock; the others
//!   watch the lock, then fill from the tier. The lock is removed after the
//!   upload, or as soon as nothing will be uploaded (the lead is dropped);
//!   one nobody renews for [`LOCK_STALE`] is taken over.
//! - `gc.lock`: held by the one `cistern cache gc` that runs
//!   ([`Shared::expire`]).
//!
//! Uses: a hit rewrites its key's index object at most once per
//! [`SharedConfig::touch_every`] ([`Shared::used`]), so the objects' last
//! write is the key's last use, to within that, and gc goes by it.
//!
//! It does not decide what may be shared: the caching path (`cache.rs`)
//! attaches uploads only to writes the policy stored and found shareable.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cacache::Integrity;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutMode, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::layout::content_path;
use crate::meta::Meta;
use crate::storage::Committed;
use crate::write::Writer;

/// How often a runner downloading a key for the fleet rewrites its lock
/// object, to show it is alive.
pub const LOCK_REFRESH: Duration = Duration::from_secs(2);
/// A lock a waiting runner has seen unchanged this long was left by a
/// runner that died or hangs: a waiting runner takes it over.
pub const LOCK_STALE: Duration = Duration::from_secs(6);
/// A lock written this long ago by the store's clock is stale at first
/// sight (the margin covers clocks that disagree).
const LOCK_OLD: Duration = Duration::from_secs(60);
/// The longest a miss waits for another runner's download, however alive
/// its lock: past it, it asks the origin itself.
const FLEET_WAIT_MAX: Duration = Duration::from_secs(300);
/// Claims of one key a miss makes at most (a lock released without an
/// upload, or taken over, is claimed again).
const FLEET_CLAIMS: usize = 3;
/// A conditional write answers more slowly than a read when many runners
/// race for one lock: it gets this many times the timeout.
const CLAIM_WAIT: u32 = 5;
/// How long misses skip the tier after it failed [`REST_AFTER`] times in a
/// row.
const BACKOFF: Duration = Duration::from_secs(5);
const REST_AFTER: u32 = 3;
/// How often a waiting miss looks at the lock: first, and at most.
const FLEET_POLL_MIN: Duration = Duration::from_millis(150);
const FLEET_POLL_MAX: Duration = Duration::from_secs(1);
/// Keys whose last use this runner remembers; past it, it forgets them
/// all (and checks each once more).
const TOUCHED_MAX: usize = 100_000;
/// Default [`SharedConfig::touch_every`].
pub const DEFAULT_TOUCH_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Default [`SharedConfig::upload_queue`].
pub const DEFAULT_UPLOAD_QUEUE: usize = 256;
/// Default [`SharedConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Static credentials for the store. `Debug` never shows the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Typed settings of the shared tier.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// The S3 endpoint URL (`https://s3.example:9000`); `None`: AWS S3 for
    /// `region`. Requests use path-style addressing with an endpoint.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The region (any value for most S3-compatible stores).
    pub region: String,
    /// Prefix of every object name (no leading or trailing `/`); empty:
    /// none.
    pub prefix: String,
    /// Credentials.
    pub credentials: Credentials,
    /// Uploads waiting at most; more are dropped (counted).
    pub upload_queue: usize,
    /// Longest wait for the store: for a lookup's answer, and between two
    /// chunks of a body. Past it the request goes to the origin.
    pub timeout: Duration,
    /// CA certificates (PEM) trusted for the endpoint besides the
    /// system's.
    pub extra_roots: Vec<Vec<u8>>,
    /// How precisely a key's last use is recorded: a hit (local or from
    /// the tier) rewrites the key's index object when it was last written
    /// longer ago than this, so `cistern cache gc` ages count from the last
    /// use, to within this much. At most one check per key per runner and
    /// one write per key per fleet in each period.
    pub touch_every: Duration,
}

/// The shared tier's counters since it was opened.
#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    index_uploads: AtomicU64,
    fleet_leads: AtomicU64,
    fleet_waits: AtomicU64,
    fleet_takeovers: AtomicU64,
    touches: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    dropped: AtomicU64,
    /// Uploads queued and not yet done.
    pending: AtomicU64,
}

/// A snapshot of the shared tier's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStats {
    /// Local misses looked up in the shared tier.
    pub lookups: u64,
    /// Bodies filled into the local store from the shared tier.
    pub hits: u64,
    /// Bytes of those bodies.
    pub hit_bytes: u64,
    /// Bodies uploaded (those already there are not counted).
    pub uploads: u64,
    /// Bytes of those bodies.
    pub upload_bytes: u64,
    /// Index objects written (after a store or a revalidation).
    pub index_uploads: u64,
    /// Misses this runner took the fleet lock for (it downloads them for
    /// the fleet).
    #[serde(default)]
    pub fleet_leads: u64,
    /// Misses that waited for another runner's download.
    #[serde(default)]
    pub fleet_waits: u64,
    /// Fleet locks taken over from a runner that stopped renewing them.
    #[serde(default)]
    pub fleet_takeovers: u64,
    /// Index objects rewritten to record a use.
    #[serde(default)]
    pub touches: u64,
    /// Failed or timed-out requests to the store.
    pub errors: u64,
    /// Bodies that did not match their content address (deleted).
    pub corrupt: u64,
    /// Uploads dropped because the queue was full.
    pub dropped: u64,
}

/// What is stored in an index object.
#[derive(Debug, Serialize, Deserialize)]
struct IndexObject {
    /// The cache key, checked on read (the name is only its hash).
    key: String,
    /// The entry's metadata, with its content address.
    meta: Meta,
}

/// One queued upload: the entry's body (unless the tier has it) and its
/// index object.
#[derive(Debug)]
struct Upload {
    key: String,
    meta: Meta,
    integrity: Integrity,
    /// Released once the upload is done.
    _lead: Option<Arc<FleetLead>>,
}

/// The upload task's work.
#[derive(Debug)]
enum Job {
    Upload(Box<Upload>),
    /// Records a use of the key (see [`SharedConfig::touch_every`]).
    Touch {
        key: String,
    },
}

/// A body of the tier, its first answer in.
pub(crate) struct ObjectBody {
    integrity: Integrity,
    path: ObjectPath,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
}

/// The shared tier. Cheap to clone; clones share the store, the counters
/// and the upload queue. The upload task ends when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
    queue: mpsc::Sender<Job>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    timeout: Duration,
    /// The local cache directory, where uploads read bodies from.
    dir: PathBuf,
    counters: Counters,
    /// Keys whose fleet lock this runner holds: it downloads them from the
    /// origin for the fleet (see [`FleetLead`]).
    leading: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<FleetLead>>>,
    /// When this runner last recorded a use of each key.
    touched: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    touch_every: Duration,
    /// Failed requests since the store last answered.
    failures_in_row: std::sync::atomic::AtomicU32,
    /// Until when the request path leaves the store alone after a failure
    /// (uploads still try): a store that is down or blackholed costs one
    /// timeout per [`BACKOFF`], not one per miss.
    resting_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Connects to the store (nothing is sent yet) and starts the upload
    /// task on the current runtime. `dir` is the local cache directory.
    pub fn open(config: &SharedConfig, dir: impl Into<PathBuf>) -> Result<Shared> {
        let shared_err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let mut client = ClientOptions::new()
            .with_timeout(config.timeout.max(Duration::from_secs(1)) * 30)
            .with_connect_timeout(config.timeout);
        for pem in &config.extra_roots {
            let cert = object_store::Certificate::from_pem(pem)
                .map_err(|e| shared_err("reading an extra root", e))?;
            client = client.with_root_certificate(cert);
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.credentials.access_key_id)
            .with_secret_access_key(&config.credentials.secret_access_key)
            .with_client_options(client)
            // A store that is down is the origin's turn, not a retry's.
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: config.timeout,
                ..RetryConfig::default()
            });
        if let Some(token) = &config.credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| shared_err("configuring the store", e))?;
        let inner = Arc::new(Inner {
            store: Arc::new(store),
            bucket: config.bucket.clone(),
            prefix: config.prefix.trim_matches('/').to_owned(),
            timeout: config.timeout,
            dir: dir.into(),
            counters: Counters::default(),
            leading: std::sync::Mutex::default(),
            touched: std::sync::Mutex::default(),
            touch_every: config.touch_every,
            failures_in_row: std::sync::atomic::AtomicU32::new(0),
            resting_until: std::sync::Mutex::default(),
        });
        let (queue, rx) = mpsc::channel(config.upload_queue.max(1));
        tokio::spawn(upload_task(inner.clone(), rx));
        Ok(Shared { inner, queue })
    }

    /// The counters.
    pub fn stats(&self) -> SharedStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedStats {
            lookups: load(&c.lookups),
            hits: load(&c.hits),
            hit_bytes: load(&c.hit_bytes),
            uploads: load(&c.uploads),
            upload_bytes: load(&c.upload_bytes),
            index_uploads: load(&c.index_uploads),
            fleet_leads: load(&c.fleet_leads),
            fleet_waits: load(&c.fleet_waits),
            fleet_takeovers: load(&c.fleet_takeovers),
            touches: load(&c.touches),
            errors: load(&c.errors),
            corrupt: load(&c.corrupt),
            dropped: load(&c.dropped),
        }
    }

    /// The object name of a key's index object.
    pub fn index_name(&self, key: &CacheKey) -> String {
        self.inner.index_path(key.as_str()).to_string()
    }

    /// The object name of a body by its content address (`sha256-…`);
    /// `None` for another algorithm.
    pub fn content_name(&self, integrity: &str) -> Option<String> {
        let integrity = integrity.parse::<Integrity>().ok()?;
        Some(self.inner.content_path(&integrity)?.to_string())
    }

    /// The metadata the tier holds for `key`, if any. Errors (the store
    /// down, slow or answering nonsense) are counted and logged, and come
    /// back as `None`: the caller asks the origin.
    pub async fn lookup(&self, key: &CacheKey) -> Option<Meta> {
        if !self.inner.available() {
            return None;
        }
        self.read_index(key).await
    }

    /// [`Shared::lookup`], even while misses leave the store alone (for a
    /// runner in the middle of the fleet's single download).
    async fn read_index(&self, key: &CacheKey) -> Option<Meta> {
        let inner = &self.inner;
        inner.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let path = inner.index_path(key.as_str());
        let got = tokio::time::timeout(inner.timeout, async {
            let got = inner.store.get(&path).await?;
            let modified = got.meta.last_modified.timestamp_millis();
            Ok::<_, object_store::Error>((modified, got.bytes().await?))
        })
        .await;
        let bytes = match got {
            Ok(Ok((modified, bytes))) => {
                inner.answered();
                if older_than(modified, inner.touch_every) {
                    self.used(key);
                }
                bytes
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {
                inner.answered();
                return None;
            }
            Ok(Err(e)) => {
                inner.failed("looking up an index object", &e);
                return None;
            }
            Err(_) => {
                inner.failed("looking up an index object", &"timed out");
                return None;
            }
        };
        match serde_json::from_slice::<IndexObject>(&bytes) {
            Ok(index)
                if index.key == key.as_str() && index.meta.integrity.starts_with("sha256-") =>
            {
                Some(index.meta)
            }
            Ok(_) => {
                inner.failed("reading an index object", &"it names another key");
                None
            }
            Err(e) => {
                inner.failed("reading an index object", &e);
                None
            }
        }
    }

    /// Opens the body `meta` names, once its first answer came within the
    /// timeout. `None` (counted, logged) when the tier does not have it or
    /// failed: the caller asks the origin, whose copy is then uploaded.
    /// `patient`: for a miss that waited for another runner's download,
    /// which the whole fleet now asks for at once: the first answer may
    /// take [`CLAIM_WAIT`] times the timeout.
    pub(crate) async fn open_body(&self, meta: &Meta, patient: bool) -> Option<ObjectBody> {
        let inner = &self.inner;
        let integrity = meta.integrity.parse::<Integrity>().ok()?;
        let path = inner.content_path(&integrity)?;
        let wait = inner.timeout * if patient { CLAIM_WAIT } else { 1 };
        match tokio::time::timeout(wait, inner.store.get(&path)).await {
            Ok(Ok(got)) => {
                inner.answered();
                Some(ObjectBody {
                    integrity,
                    path,
                    stream: got.into_stream(),
                })
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {
                tracing::info!(object = %path, "an index object of the shared cache tier names a body it does not have");
                None
            }
            Ok(Err(e)) => {
                inner.failed("fetching a body", &e);
                None
            }
            Err(_) => {
                inner.failed("fetching a body", &"timed out");
                None
            }
        }
    }

    /// Streams `body` into `writer` (opened by the local store for the key,
    /// with `meta`) and commits it there if it hashes to its content
    /// address. On an error nothing is stored and requests reading along
    /// go on from the origin (`Writer::source_failed`); a body that does
    /// not match (or is cut short) is deleted from the tier.
    pub(crate) async fn fill(
        &self,
        mut writer: Writer,
        meta: &Meta,
        body: ObjectBody,
    ) -> Result<Entry> {
        let inner = &self.inner;
        let ObjectBody {
            integrity,
            path,
            mut stream,
        } = body;
        writer.expect_address(integrity);
        let streamed = loop {
            let next = match tokio::time::timeout(inner.timeout, stream.next()).await {
                Ok(next) => next,
                Err(e) => {
                    break Err(Error::Shared {
                        op: "reading a body",
                        source: Box::new(e),
                    })
                }
            };
            match next {
                None => break Ok(()),
                Some(Ok(chunk)) => {
                    if let Err(e) = writer.write_bytes(chunk).await {
                        break Err(e);
                    }
                }
                Some(Err(e)) => {
                    break Err(Error::Shared {
                        op: "reading a body",
                        source: Box::new(e),
                    })
                }
            }
        };
        if let Err(e) = streamed {
            inner.failed("filling a body", &e);
            writer.source_failed();
            return Err(e);
        }
        let size = writer.written();
        let committed = if size == meta.size {
            writer.commit().await
        } else {
            writer.source_failed();
            Err(Error::LengthMismatch {
                expected: meta.size,
                actual: size,
            })
        };
        match committed {
            Ok(entry) => {
                inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                inner.counters.hit_bytes.fetch_add(size, Ordering::Relaxed);
                tracing::debug!(key = %entry.key, size, "filled from the shared cache tier");
                Ok(entry)
            }
            Err(e @ (Error::AddressMismatch { .. } | Error::LengthMismatch { .. })) => {
                tracing::warn!(error = %e, object = %path, "corrupt object in the shared cache tier; deleting it");
                let deleted = tokio::time::timeout(inner.timeout, inner.store.delete(&path)).await;
                if !matches!(deleted, Ok(Ok(()))) {
                    inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The fleet-wide single download, for a key the tier does not have:
    /// creates the key's lock object with a conditional write (`If-None-Match:
    /// *`). This runner then leads ([`Fleet::Lead`]): it downloads the key
    /// for the fleet, and its [`FleetLead`] rewrites the lock every
    /// [`LOCK_REFRESH`] until it is dropped (uploaded, or failed: nothing
    /// to wait for). Else it waits for the lead's index object
    /// ([`Fleet::Ready`]); a lock released without one is claimed again,
    /// and a lock nobody rewrote for [`LOCK_STALE`] (its runner died or
    /// hangs) is taken over with a conditional write on its `ETag`, so one
    /// waiter leads. [`Fleet::Alone`]: the store failed, or this runner
    /// already leads the key (another request of this host fetches it):
    /// ask the origin without the fleet.
    pub(crate) async fn lead_or_wait(&self, key: &CacheKey) -> Fleet {
        let inner = &self.inner;
        if !inner.available() || inner.lead_of(key.as_str()).is_some() {
            return Fleet::Alone;
        }
        let path = inner.lock_path(key.as_str());
        let mut waited = false;
        for attempt in 0..FLEET_CLAIMS {
            // A lock already there (the usual case when many runners miss
            // at once) is waited for without a conditional write, which
            // some stores answer slowly under a burst.
            let held = attempt == 0
                && match tokio::time::timeout(inner.timeout, inner.store.head(&path)).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(object_store::Error::NotFound { .. })) => false,
                    Ok(Err(e)) => {
                        inner.failed("looking at a fleet lock", &e);
                        return Fleet::Alone;
                    }
                    Err(_) => {
                        inner.failed("looking at a fleet lock", &"timed out");
                        return Fleet::Alone;
                    }
                };
            if !held {
                let put = inner.store.put_opts(
                    &path,
                    PutPayload::from(lock_stamp()),
                    PutMode::Create.into(),
                );
                match tokio::time::timeout(inner.timeout * CLAIM_WAIT, put).await {
                    Ok(Ok(_)) => {
                        inner.answered();
                        return self.led(key, path).await;
                    }
                    Ok(Err(object_store::Error::AlreadyExists { .. })) => inner.answered(),
                    Ok(Err(e)) => {
                        inner.failed("taking a fleet lock", &e);
                        return Fleet::Alone;
                    }
                    // Slow under a burst, not down (it answered the
                    // lookup): whoever's write landed leads, and a lock
                    // nobody renews (this one's, if it landed) is taken
                    // over. Wait for it rather than ask the origin.
                    Err(_) => {
                        inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(key = %key, "a fleet lock's conditional write timed out; waiting");
                    }
                }
            }
            if !waited {
                waited = true;
                inner.counters.fleet_waits.fetch_add(1, Ordering::Relaxed);
            }
            match self.wait_for(key, &path).await {
                Waited::Ready(meta) => return Fleet::Ready(meta),
                Waited::Released => {}
                Waited::Stale(e_tag) => {
                    let take = inner.store.put_opts(
                        &path,
                        PutPayload::from(lock_stamp()),
                        PutMode::Update(object_store::UpdateVersion {
                            e_tag: Some(e_tag),
                            version: None,
                        })
                        .into(),
                    );
                    match tokio::time::timeout(inner.timeout * CLAIM_WAIT, take).await {
                        Ok(Ok(_)) => {
                            tracing::info!(key = %key, "took over a fleet lock its runner stopped renewing");
                            inner
                                .counters
                                .fleet_takeovers
                                .fetch_add(1, Ordering::Relaxed);
                            return self.led(key, path).await;
                        }
                        // Another waiter took it over, or it went: wait
                        // again, or claim it.
                        Ok(Err(
                            object_store::Error::Precondition { .. }
                            | object_store::Error::AlreadyExists { .. }
                            | object_store::Error::NotFound { .. },
                        )) => {}
                        // A store without conditional overwrites: remove
                        // it and claim it like a released one.
                        Ok(Err(
                            object_store::Error::NotImplemented
                            | object_store::Error::NotSupported { .. },
                        )) => {
                            let _ = tokio::time::timeout(inner.timeout, inner.store.delete(&path))
                                .await;
                        }
                        Ok(Err(e)) => {
                            inner.failed("taking over a fleet lock", &e);
                            return Fleet::Alone;
                        }
                        Err(_) => {
                            inner.failed("taking over a fleet lock", &"timed out");
                            return Fleet::Alone;
                        }
                    }
                }
                Waited::GaveUp => return Fleet::Alone,
            }
        }
        Fleet::Alone
    }

    /// This runner holds `key`'s lock: it leads, unless the key was
    /// uploaded between the lookup and the claim.
    async fn led(&self, key: &CacheKey, path: ObjectPath) -> Fleet {
        let lead = FleetLead::start(self.inner.clone(), key.as_str(), path);
        match self.read_index(key).await {
            // Dropping the lead releases the lock.
            Some(meta) => Fleet::Ready(Box::new(meta)),
            None => {
                self.inner
                    .counters
                    .fleet_leads
                    .fetch_add(1, Ordering::Relaxed);
                Fleet::Lead(lead)
            }
        }
    }

    /// Watches `key`'s lock (at `path`) while another runner downloads the
    /// key, looking a little less often as the wait goes on.
    async fn wait_for(&self, key: &CacheKey, path: &ObjectPath) -> Waited {
        let inner = &self.inner;
        let started = tokio::time::Instant::now();
        let mut pause = FLEET_POLL_MIN;
        // The lock's version, and since when this runner has seen it.
        let mut seen: Option<(String, tokio::time::Instant)> = None;
        // When the store last answered: a slow answer or two under a
        // burst is no reason to download again; a store silent for
        // `LOCK_STALE` is.
        let mut answered = tokio::time::Instant::now();
        while started.elapsed() < FLEET_WAIT_MAX && answered.elapsed() < LOCK_STALE {
            tokio::time::sleep(jitter(pause)).await;
            pause = (pause * 3 / 2).min(FLEET_POLL_MAX);
            match tokio::time::timeout(inner.timeout, inner.store.head(path)).await {
                Ok(Ok(lock)) => {
                    inner.answered();
                    answered = tokio::time::Instant::now();
                    let version = lock
                        .e_tag
                        .clone()
                        .unwrap_or_else(|| lock.last_modified.to_rfc3339());
                    // Left long ago (by the store's clock, with room for
                    // skew): no need to watch it go stale.
                    let old = older_than(lock.last_modified.timestamp_millis(), LOCK_OLD);
                    let unchanged = match &seen {
                        Some((v, since)) if *v == version => since.elapsed() >= LOCK_STALE,
                        _ => {
                            seen = Some((version.clone(), tokio::time::Instant::now()));
                            false
                        }
                    };
                    if old || unchanged {
                        return Waited::Stale(version);
                    }
                }
                Ok(Err(object_store::Error::NotFound { .. })) => {
                    // Released: uploaded just now, or given up.
                    return match self.read_index(key).await {
                        Some(meta) => Waited::Ready(Box::new(meta)),
                        None => Waited::Released,
                    };
                }
                Ok(Err(e)) => {
                    inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "watching a fleet lock failed");
                }
                Err(_) => {
                    inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("watching a fleet lock timed out");
                }
            }
        }
        Waited::GaveUp
    }

    /// Marks a local hit of a shareable entry as a use of the fleet's copy
    /// (see [`SharedConfig::touch_every`]). Never waits: at most once per
    /// `touch_every` per key, a check is queued with the uploads.
    pub fn used(&self, key: &CacheKey) {
        let inner = &self.inner;
        let now = tokio::time::Instant::now();
        {
            let mut touched = inner
                .touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(touched.get(key.as_str()), Some(at) if now.duration_since(*at) < inner.touch_every)
            {
                return;
            }
            if touched.len() >= TOUCHED_MAX {
                touched.clear();
            }
            touched.insert(key.as_str().to_owned(), now);
        }
        let job = Job::Touch {
            key: key.as_str().to_owned(),
        };
        inner.counters.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.try_send(job).is_err() {
            inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Queues the upload of a committed entry (its body unless the tier
    /// has it, then its index object). Never waits: with the queue full
    /// the upload is dropped (counted).
    pub fn upload(&self, entry: &Entry) {
        self.upload_led(entry, None);
    }

    /// [`Shared::upload`] of this runner's download for the fleet: `lead`
    /// is dropped (the lock released) once the index object is written, or
    /// when the upload is dropped or fails.
    fn upload_led(&self, entry: &Entry, lead: Option<Arc<FleetLead>>) {
        let job = Job::Upload(Box::new(Upload {
            key: entry.key.as_str().to_owned(),
            meta: entry.meta.clone(),
            integrity: entry.integrity.clone(),
            _lead: lead,
        }));
        self.inner.counters.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.try_send(job).is_err() {
            self.inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = %entry.key, "shared cache tier upload queue full; upload dropped");
        }
    }

    /// What a writer of `key` tells when it commits: upload the entry,
    /// holding this runner's lead of the key for the fleet if it has one.
    pub(crate) fn uploader(&self, key: &CacheKey) -> Arc<dyn Committed> {
        Arc::new(Uploader {
            shared: self.clone(),
            lead: self.inner.lead_of(key.as_str()),
        })
    }

    /// Waits until no upload is queued or running, or `limit` has passed
    /// (at shutdown, and for tests). Returns whether none is left.
    pub async fn drain(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        while self.inner.counters.pending.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// What [`Shared::expire`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Keys whose last use (store, revalidation or hit, see
    /// [`SharedConfig::touch_every`]) is older than this.
    pub older_than: Option<Duration>,
    /// Then, least recently used keys first, until the bodies take at most
    /// this many bytes.
    pub max_size: Option<u64>,
}

/// What [`Shared::expire`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Index objects removed.
    pub index_objects: u64,
    /// Bodies removed.
    pub bodies: u64,
    /// Bytes of those bodies.
    pub bytes: u64,
    /// Bytes of the bodies left.
    pub kept_bytes: u64,
}

/// The gc lock: one `cistern cache gc` at a time across the fleet.
const GC_LOCK: &str = "gc.lock";
/// How often a running gc rewrites its lock.
const GC_LOCK_REFRESH: Duration = Duration::from_secs(10);
/// A gc lock written longer ago (by the store's clock) was left by a gc
/// that died: the next gc takes it over.
const GC_LOCK_STALE: Duration = Duration::from_secs(120);
/// A body no index object names is left this long: its upload's index
/// object may be on its way.
const ORPHAN_GRACE: Duration = Duration::from_secs(3600);
/// Fleet locks left longer ago than this are removed by gc.
const LOCK_LEFT: Duration = Duration::from_secs(3600);

/// One index object as a gc lists it.
struct Listed {
    location: ObjectPath,
    modified: i64,
    /// The body it names.
    body: Option<ObjectPath>,
}

impl Shared {
    /// Expires the tier: removes the index objects of keys not used for
    /// `expiry.older_than`, then those of the least recently used keys
    /// until the bodies fit `expiry.max_size`, then the bodies no index
    /// object names any more.
    ///
    /// Safe beside running runners and other gcs:
    /// - one gc at a time: it holds `gc.lock` (a conditional write,
    ///   renewed while it runs; one left by a dead gc is taken over after
    ///   [`GC_LOCK_STALE`]); another gc meanwhile fails with
    ///   [`Error::SharedBusy`];
    /// - an index object is checked again just before it is removed: one
    ///   rewritten since the listing (stored, revalidated, used) stays;
    /// - before bodies are removed, index objects are listed again, and a
    ///   body one of them names stays; after, those written meanwhile that
    ///   name a removed body are removed (a miss), and the upload that wrote
    ///   one looks for its body once more and puts it back (see
    ///   `Inner::upload`);
    /// - a body no index object names is left for [`ORPHAN_GRACE`] (its
    ///   index object may be on its way);
    /// - a runner reading a body being removed goes on from the origin.
    pub async fn expire(&self, expiry: Expiry, now: std::time::SystemTime) -> Result<ExpireReport> {
        let gc = GcLock::take(self.inner.clone()).await?;
        let expired = self.expire_locked(expiry, now, gc.since_ms).await;
        gc.release().await;
        expired
    }

    async fn expire_locked(
        &self,
        expiry: Expiry,
        now: std::time::SystemTime,
        since_ms: i64,
    ) -> Result<ExpireReport> {
        let inner = &self.inner;
        let err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let cutoff_ms = expiry.older_than.map_or(i64::MIN, |age| {
            i64::try_from(crate::meta::unix_ms(
                now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH),
            ))
            .unwrap_or(i64::MAX)
        });
        let grace_ms = i64::try_from(ORPHAN_GRACE.as_millis()).unwrap_or(i64::MAX);
        let mut report = ExpireReport::default();

        // Everything, as it is now.
        let mut index = self.list_index(None).await?;
        let mut bodies = std::collections::HashMap::new();
        let listed: Vec<_> = inner
            .store
            .list(Some(&inner.name("content".into())))
            .collect()
            .await;
        for object in listed {
            let object = object.map_err(|e| err("listing bodies", e))?;
            bodies.insert(
                object.location,
                (object.size, object.last_modified.timestamp_millis()),
            );
        }
        let mut names: std::collections::HashMap<ObjectPath, u32> =
            std::collections::HashMap::new();
        for listed in &index {
            if let Some(body) = &listed.body {
                *names.entry(body.clone()).or_default() += 1;
            }
        }
        let mut total: u64 = bodies.values().map(|(size, _)| size).sum();
        // Bodies no index object names, old enough not to be an upload
        // under way: their bytes do not count.
        let orphan_before =
            (since_ms.saturating_sub(grace_ms)).min(if expiry.older_than.is_some() {
                cutoff_ms
            } else {
                i64::MAX
            });
        let orphan = |location: &ObjectPath,
                      modified: i64,
                      names: &std::collections::HashMap<ObjectPath, u32>| {
            !names.contains_key(location) && modified < orphan_before
        };
        for (location, (size, modified)) in &bodies {
            if orphan(location, *modified, &names) {
                total = total.saturating_sub(*size);
            }
        }

        // Index objects to remove: too old, then least recently used.
        index.sort_by_key(|l| l.modified);
        let mut doomed = vec![false; index.len()];
        for (i, listed) in index.iter().enumerate() {
            let over = expiry.max_size.is_some_and(|max| total > max);
            if listed.modified >= cutoff_ms && !over {
                continue;
            }
            doomed[i] = true;
            if let Some(body) = &listed.body {
                if let Some(n) = names.get_mut(body) {
                    *n -= 1;
                    if *n == 0 {
                        names.remove(body);
                        total = total.saturating_sub(bodies.get(body).map_or(0, |(size, _)| *size));
                    }
                }
            }
        }
        let mut kept = std::collections::HashSet::new();
        let mut freed = std::collections::HashSet::new();
        for (listed, doomed) in index.iter().zip(doomed) {
            if doomed {
                // Checked again: a runner may have just rewritten it.
                match inner.store.head(&listed.location).await {
                    Ok(head) if head.last_modified.timestamp_millis() <= listed.modified => {
                        match inner.store.delete(&listed.location).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                                report.index_objects += 1;
                                if let Some(body) = &listed.body {
                                    freed.insert(body.clone());
                                }
                                continue;
                            }
                            Err(e) => return Err(err("removing an index object", e)),
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(err("checking an index object", e)),
                }
            }
            if let Some(body) = &listed.body {
                kept.insert(body.clone());
            }
        }
        // Index objects written since the listing keep their bodies.
        let seen: std::collections::HashSet<ObjectPath> =
            index.iter().map(|l| l.location.clone()).collect();
        for listed in self.list_index(Some((since_ms, &seen))).await? {
            if let Some(body) = listed.body {
                kept.insert(body);
            }
        }
        let mut removed = std::collections::HashSet::new();
        for (location, (size, modified)) in &bodies {
            let unnamed = freed.contains(location) || orphan(location, *modified, &names);
            if kept.contains(location) || !unnamed {
                continue;
            }
            match inner.store.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    report.bodies += 1;
                    report.bytes += size;
                    removed.insert(location.clone());
                }
                Err(e) => return Err(err("removing a body", e)),
            }
        }
        // An index object written while the bodies went that names one of
        // them: removed (a miss for the next runner, not a broken hit).
        if !removed.is_empty() {
            for listed in self.list_index(Some((since_ms, &seen))).await? {
                if listed.body.is_some_and(|b| removed.contains(&b)) {
                    let _ = inner.store.delete(&listed.location).await;
                }
            }
        }
        report.kept_bytes = bodies
            .iter()
            .filter(|(location, _)| !removed.contains(*location))
            .map(|(_, (size, _))| size)
            .sum();

        // Fleet locks left by runners long gone.
        let locks: Vec<_> = inner
            .store
            .list(Some(&inner.name("lock".into())))
            .collect()
            .await;
        for lock in locks.into_iter().flatten() {
            if older_than(lock.last_modified.timestamp_millis(), LOCK_LEFT) {
                let _ = inner.store.delete(&lock.location).await;
            }
        }
        Ok(report)
    }

    /// The index objects and the bodies they name; with `since`, only
    /// those written at or after that time or not in the set.
    async fn list_index(
        &self,
        since: Option<(i64, &std::collections::HashSet<ObjectPath>)>,
    ) -> Result<Vec<Listed>> {
        let inner = &self.inner;
        let err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let objects: Vec<_> = inner
            .store
            .list(Some(&inner.name("index".into())))
            .collect()
            .await;
        let mut index = Vec::new();
        for object in objects {
            let object = object.map_err(|e| err("listing index objects", e))?;
            let modified = object.last_modified.timestamp_millis();
            if let Some((since_ms, seen)) = since {
                if modified < since_ms && seen.contains(&object.location) {
                    continue;
                }
            }
            let bytes = match inner.store.get(&object.location).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map_err(|e| err("reading an index object", e))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(err("reading an index object", e)),
            };
            let body = serde_json::from_slice::<IndexObject>(&bytes)
                .ok()
                .and_then(|index| index.meta.integrity.parse::<Integrity>().ok())
                .and_then(|i| inner.content_path(&i));
            index.push(Listed {
                location: object.location,
                modified,
                body,
            });
        }
        Ok(index)
    }
}

/// The gc lock, held while a gc runs.
struct GcLock {
    inner: Arc<Inner>,
    path: ObjectPath,
    refresh: tokio::task::JoinHandle<()>,
    /// When the gc started, by the store's clock (less a second for its
    /// precision).
    since_ms: i64,
}

impl GcLock {
    async fn take(inner: Arc<Inner>) -> Result<GcLock> {
        let err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let path = inner.name(GC_LOCK.into());
        let create = inner
            .store
            .put_opts(
                &path,
                PutPayload::from(lock_stamp()),
                PutMode::Create.into(),
            )
            .await;
        match create {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let head = inner
                    .store
                    .head(&path)
                    .await
                    .map_err(|e| err("checking the gc lock", e))?;
                let since = head.last_modified;
                if !older_than(since.timestamp_millis(), GC_LOCK_STALE) {
                    return Err(Error::SharedBusy {
                        since: since.to_rfc3339(),
                    });
                }
                let take = inner
                    .store
                    .put_opts(
                        &path,
                        PutPayload::from(lock_stamp()),
                        PutMode::Update(object_store::UpdateVersion {
                            e_tag: head.e_tag,
                            version: None,
                        })
                        .into(),
                    )
                    .await;
                match take {
                    Ok(_) => {}
                    Err(object_store::Error::Precondition { .. }) => {
                        return Err(Error::SharedBusy {
                            since: "just now".into(),
                        })
                    }
                    Err(e) => return Err(err("taking over the gc lock", e)),
                }
            }
            Err(e) => return Err(err("taking the gc lock", e)),
        }
        let head = inner
            .store
            .head(&path)
            .await
            .map_err(|e| err("checking the gc lock", e))?;
        let since_ms = head.last_modified.timestamp_millis() - 1000;
        let refresh = tokio::spawn({
            let (inner, path) = (inner.clone(), path.clone());
            async move {
                loop {
                    tokio::time::sleep(GC_LOCK_REFRESH).await;
                    let _ = inner.store.put(&path, PutPayload::from(lock_stamp())).await;
                }
            }
        });
        Ok(GcLock {
            inner,
            path,
            refresh,
            since_ms,
        })
    }

    async fn release(self) {
        self.refresh.abort();
        let _ = self.inner.store.delete(&self.path).await;
    }
}

/// The commit hook of a shareable write: uploads the entry. It holds the
/// fleet lead of the write's key, if this runner has one, so that a write
/// given up (its hook dropped) releases the lock at once.
#[derive(Debug)]
struct Uploader {
    shared: Shared,
    lead: Option<Arc<FleetLead>>,
}

impl Committed for Uploader {
    fn committed(&self, entry: &Entry) {
        self.shared.upload_led(entry, self.lead.clone());
    }
}

/// What [`Shared::lead_or_wait`] decided for a key nobody in the fleet has.
#[derive(Debug)]
pub(crate) enum Fleet {
    /// Another runner's download is in the tier now.
    Ready(Box<Meta>),
    /// This runner downloads it for the fleet; the lock is held while the
    /// lead lives.
    Lead(Arc<FleetLead>),
    /// Ask the origin without the fleet.
    Alone,
}

/// How a wait for another runner's download ended.
enum Waited {
    Ready(Box<Meta>),
    /// The lock went without an upload.
    Released,
    /// Nobody rewrote the lock for [`LOCK_STALE`]: its version (`ETag`).
    Stale(String),
    GaveUp,
}

/// This runner's download of a key for the fleet. While it lives, the
/// key's lock object is rewritten every [`LOCK_REFRESH`] (the others see
/// the lead alive however long the download takes); dropped, the lock is
/// removed: after the upload, or at once when the download failed, was not
/// stored or is not shared (the miss, the write and the upload each hold
/// it while they may still lead to an upload).
pub struct FleetLead {
    inner: Arc<Inner>,
    key: String,
    path: ObjectPath,
    refresh: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for FleetLead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLead").field("key", &self.key).finish()
    }
}

impl FleetLead {
    fn start(inner: Arc<Inner>, key: &str, path: ObjectPath) -> Arc<FleetLead> {
        let refresh = tokio::spawn({
            let (inner, path) = (inner.clone(), path.clone());
            async move {
                loop {
                    tokio::time::sleep(LOCK_REFRESH).await;
                    let put = inner.store.put(&path, PutPayload::from(lock_stamp()));
                    if !matches!(tokio::time::timeout(LOCK_REFRESH, put).await, Ok(Ok(_))) {
                        tracing::debug!(object = %path, "cannot renew a fleet lock");
                    }
                }
            }
        });
        let lead = Arc::new(FleetLead {
            inner: inner.clone(),
            key: key.to_owned(),
            path,
            refresh,
        });
        inner
            .leading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), Arc::downgrade(&lead));
        lead
    }
}

impl Drop for FleetLead {
    fn drop(&mut self) {
        self.refresh.abort();
        {
            let mut leading = self
                .inner
                .leading
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if leading
                .get(&self.key)
                .is_some_and(|l| l.strong_count() == 0)
            {
                leading.remove(&self.key);
            }
        }
        let (inner, path) = (self.inner.clone(), self.path.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(inner.timeout, inner.store.delete(&path)).await;
            });
        }
    }
}

/// A lock object's content: when it was written, for people looking at
/// the bucket (runners compare versions, not clocks).
fn lock_stamp() -> Bytes {
    Bytes::from(crate::meta::unix_ms(std::time::SystemTime::now()).to_string())
}

/// Whether a time of the store's clock (ms since the epoch) is more than
/// `age` before this runner's clock.
fn older_than(modified_ms: i64, age: Duration) -> bool {
    let now = i64::try_from(crate::meta::unix_ms(std::time::SystemTime::now())).unwrap_or(i64::MAX);
    let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(modified_ms) > age
}

/// `pause` give or take a quarter, so the runners waiting for one lock do
/// not all ask at the same moment.
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let quarter = pause / 4;
    pause - quarter + quarter * 2 * (nanos % 1000) / 1000
}

impl Inner {
    /// A request to the store failed: counted; after [`REST_AFTER`] in a
    /// row, misses leave the store alone for [`BACKOFF`] (a single slow
    /// answer under a burst does not send a runner to the origin for
    /// everything).
    fn failed(&self, op: &str, error: &dyn fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if self.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1 >= REST_AFTER {
            *self
                .resting_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(tokio::time::Instant::now() + BACKOFF);
        }
        tracing::warn!(error = %error, "shared cache tier failed while {op}; asking the origin");
    }

    /// The store answered (found or not).
    fn answered(&self) {
        self.failures_in_row.store(0, Ordering::Relaxed);
    }

    fn name(&self, rest: String) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.prefix))
        }
    }

    /// Whether misses may ask the store (it has not failed lately).
    fn available(&self) -> bool {
        let until = *self
            .resting_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !matches!(until, Some(until) if tokio::time::Instant::now() < until)
    }

    fn lock_path(&self, key: &str) -> ObjectPath {
        let (_, hex) = Integrity::from(key.as_bytes()).to_hex();
        self.name(format!("lock/{hex}"))
    }

    /// This runner's live lead of `key`, if it has one.
    fn lead_of(&self, key: &str) -> Option<Arc<FleetLead>> {
        self.leading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .and_then(std::sync::Weak::upgrade)
    }

    fn index_path(&self, key: &str) -> ObjectPath {
        let (_, hex) = Integrity::from(key.as_bytes()).to_hex();
        self.name(format!("index/{hex}"))
    }

    fn content_path(&self, integrity: &Integrity) -> Option<ObjectPath> {
        let (algorithm, hex) = integrity.to_hex();
        (algorithm == ssri::Algorithm::Sha256).then(|| self.name(format!("content/sha256/{hex}")))
    }

    /// One upload: the body if the tier does not have it, then the index
    /// object (after the body, so an index object never names a body that
    /// is not there yet). A body that was there is looked for again after
    /// the index object is written: a `cistern cache gc` may have removed
    /// it in between (it removes a body only when no index object it lists
    /// afterwards names it, so one of the two sees the other).
    async fn upload(&self, upload: &Upload) -> Result<()> {
        let shared_err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let Some(path) = self.content_path(&upload.integrity) else {
            return Ok(());
        };
        let found = match self.store.head(&path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => {
                self.put_body(&path, &upload.integrity).await?;
                false
            }
            Err(e) => return Err(shared_err("checking for a body", e)),
        };
        let index = IndexObject {
            key: upload.key.clone(),
            meta: upload.meta.clone(),
        };
        let json = serde_json::to_vec(&index).map_err(|source| Error::Metadata {
            key: upload.key.clone(),
            source,
        })?;
        self.store
            .put(
                &self.index_path(&upload.key),
                PutPayload::from(Bytes::from(json)),
            )
            .await
            .map_err(|e| shared_err("writing an index object", e))?;
        self.counters.index_uploads.fetch_add(1, Ordering::Relaxed);
        if found {
            match self.store.head(&path).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    self.put_body(&path, &upload.integrity).await?;
                }
                Err(e) => return Err(shared_err("checking for a body", e)),
            }
        }
        Ok(())
    }

    /// Uploads the local store's body of `integrity` to `path`.
    async fn put_body(&self, path: &ObjectPath, integrity: &Integrity) -> Result<()> {
        let file = content_path(&self.dir, integrity);
        let mut body = tokio::fs::File::open(&file)
            .await
            .map_err(|e| Error::io("reading a body to upload", e))?;
        let mut out = object_store::buffered::BufWriter::new(self.store.clone(), path.clone());
        let sent = tokio::io::copy(&mut body, &mut out).await;
        let sent = match sent {
            Ok(n) => out.shutdown().await.map(|()| n),
            Err(e) => {
                let _ = out.abort().await;
                Err(e)
            }
        };
        let sent = sent.map_err(|e| Error::Shared {
            op: "uploading a body",
            source: Box::new(e),
        })?;
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
        self.counters
            .upload_bytes
            .fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    /// Records a use of `key`: rewrites its index object, unchanged, when
    /// it was last written more than `touch_every` ago (a conditional
    /// write: one rewritten meanwhile is recent enough).
    async fn touch(&self, key: &str) -> Result<()> {
        let shared_err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let path = self.index_path(key);
        let head = match self.store.head(&path).await {
            Ok(head) => head,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(shared_err("checking an index object", e)),
        };
        if !older_than(head.last_modified.timestamp_millis(), self.touch_every) {
            return Ok(());
        }
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(shared_err("reading an index object", e)),
        };
        let mode = match got.meta.e_tag.clone() {
            Some(e_tag) => PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(e_tag),
                version: None,
            }),
            None => PutMode::Overwrite,
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| shared_err("reading an index object", e))?;
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), mode.into())
            .await
        {
            Ok(_) => {
                self.counters.touches.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(object = %path, "recorded a use in the shared cache tier");
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(()),
            Err(e) => Err(shared_err("recording a use", e)),
        }
    }
}

/// Runs the queued jobs one at a time, until every [`Shared`] is gone.
async fn upload_task(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let (done, key) = match &job {
            Job::Upload(upload) => (inner.upload(upload).await, &upload.key),
            Job::Touch { key } => (inner.touch(key).await, key),
        };
        if let Err(e) = done {
            inner.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, key = %key, "shared cache tier upload failed");
        }
        // An upload's fleet lead, if any, is released here.
        drop(job);
        inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
    }
}
