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
//!   object with a conditional write ([`Shared::claim`]) and downloads it;
//!   the others wait for its index object ([`Shared::wait_for`]). The lock
//!   is removed after the upload, or when nothing will be uploaded; one
//!   older than [`FLEET_LOCK_TTL`] is abandoned.
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

/// A fleet lock older than this is taken for abandoned (its runner's
/// download failed, or the runner went away), and the longest a miss waits
/// for another runner's download before it asks the origin itself.
pub const FLEET_LOCK_TTL: Duration = Duration::from_secs(30);
/// A conditional write answers more slowly than a read when many runners
/// race for one lock: it gets this many times the timeout.
const CLAIM_WAIT: u32 = 5;
/// How long misses skip the tier after it failed one.
const BACKOFF: Duration = Duration::from_secs(5);
/// How often a waiting miss looks for the index object.
const FLEET_POLL: Duration = Duration::from_millis(200);
/// Failed looks at a fleet lock after which a waiting miss gives up.
const FLEET_WAIT_FAILURES: u32 = 3;

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
    queue: mpsc::Sender<Upload>,
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
    /// origin for the fleet, and releases the lock once it uploaded them
    /// (or will not).
    leading: std::sync::Mutex<std::collections::HashSet<String>>,
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
        let inner = &self.inner;
        if !inner.available() {
            return None;
        }
        inner.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let path = inner.index_path(key.as_str());
        let got = tokio::time::timeout(inner.timeout, async {
            inner.store.get(&path).await?.bytes().await
        })
        .await;
        let bytes = match got {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(object_store::Error::NotFound { .. })) => return None,
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
    pub(crate) async fn open_body(&self, meta: &Meta) -> Option<ObjectBody> {
        let inner = &self.inner;
        let integrity = meta.integrity.parse::<Integrity>().ok()?;
        let path = inner.content_path(&integrity)?;
        match tokio::time::timeout(inner.timeout, inner.store.get(&path)).await {
            Ok(Ok(got)) => Some(ObjectBody {
                integrity,
                path,
                stream: got.into_stream(),
            }),
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

    /// The fleet-wide single download: for a key the tier does not have,
    /// creates its lock object with a conditional write (`If-None-Match:
    /// *`). `Some(true)`: this runner has it and downloads the key for the
    /// fleet ([`Shared::release`] once it uploaded it or will not);
    /// `Some(false)`: another runner is downloading it; `None`: the store
    /// failed (go to the origin alone).
    pub(crate) async fn claim(&self, key: &CacheKey) -> Option<bool> {
        let inner = &self.inner;
        if !inner.available() {
            return None;
        }
        let path = inner.lock_path(key.as_str());
        for _ in 0..2 {
            let stamp = Bytes::from(crate::meta::unix_ms(std::time::SystemTime::now()).to_string());
            let put = inner
                .store
                .put_opts(&path, PutPayload::from(stamp), PutMode::Create.into());
            match tokio::time::timeout(inner.timeout * CLAIM_WAIT, put).await {
                Ok(Ok(_)) => {
                    inner.lead(key.as_str());
                    return Some(true);
                }
                Ok(Err(object_store::Error::AlreadyExists { .. })) => {}
                Ok(Err(e)) => {
                    inner.failed("taking a fleet lock", &e);
                    return None;
                }
                Err(_) => {
                    inner.failed("taking a fleet lock", &"timed out");
                    return None;
                }
            }
            // Held: by a live download, or abandoned?
            let held = tokio::time::timeout(inner.timeout, inner.store.head(&path)).await;
            match held {
                Ok(Ok(lock)) if !inner.abandoned(lock.last_modified.timestamp_millis()) => {
                    return Some(false);
                }
                Ok(Ok(_)) => {
                    let _ = tokio::time::timeout(inner.timeout, inner.store.delete(&path)).await;
                }
                Ok(Err(object_store::Error::NotFound { .. })) => {}
                _ => return None,
            }
        }
        None
    }

    /// Waits for the runner holding `key`'s fleet lock to upload it: the
    /// metadata once its index object is there; `None` when the lock went
    /// without one, or after [`FLEET_LOCK_TTL`].
    pub(crate) async fn wait_for(&self, key: &CacheKey) -> Option<Meta> {
        let inner = &self.inner;
        inner.counters.fleet_waits.fetch_add(1, Ordering::Relaxed);
        let until = tokio::time::Instant::now() + FLEET_LOCK_TTL;
        let lock = inner.lock_path(key.as_str());
        // A slow answer or two is no reason to download again; a store
        // that keeps failing is.
        let mut failures = 0;
        while tokio::time::Instant::now() < until && failures < FLEET_WAIT_FAILURES {
            tokio::time::sleep(FLEET_POLL).await;
            if let Some(meta) = self.lookup(key).await {
                return Some(meta);
            }
            match tokio::time::timeout(inner.timeout, inner.store.head(&lock)).await {
                Ok(Ok(lock)) if !inner.abandoned(lock.last_modified.timestamp_millis()) => {}
                Ok(Ok(_)) => return None,
                Ok(Err(object_store::Error::NotFound { .. })) => {
                    // Released: uploaded just now, or given up.
                    return self.lookup(key).await;
                }
                Ok(Err(e)) => {
                    inner.failed("watching a fleet lock", &e);
                    failures += 1;
                }
                Err(_) => {
                    inner.failed("watching a fleet lock", &"timed out");
                    failures += 1;
                }
            }
        }
        None
    }

    /// Counts a miss this runner downloads for the fleet (it holds the
    /// lock, and the tier still has no index object for the key).
    pub(crate) fn leads(&self) {
        self.inner
            .counters
            .fleet_leads
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Releases `key`'s fleet lock if this runner holds it (its download
    /// will not be stored, so nothing will be uploaded).
    pub(crate) fn release(&self, key: &CacheKey) {
        let inner = self.inner.clone();
        if !inner.unlead(key.as_str()) {
            return;
        }
        let path = inner.lock_path(key.as_str());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(inner.timeout, inner.store.delete(&path)).await;
        });
    }

    /// Queues the upload of a committed entry (its body unless the tier
    /// has it, then its index object). Never waits: with the queue full
    /// the upload is dropped (counted).
    pub fn upload(&self, entry: &Entry) {
        let upload = Upload {
            key: entry.key.as_str().to_owned(),
            meta: entry.meta.clone(),
            integrity: entry.integrity.clone(),
        };
        self.inner.counters.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.try_send(upload).is_err() {
            self.inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.release(&entry.key);
            tracing::debug!(key = %entry.key, "shared cache tier upload queue full; upload dropped");
        }
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

/// What [`Shared::expire`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Index objects removed.
    pub index_objects: u64,
    /// Bodies removed.
    pub bodies: u64,
    /// Bytes of those bodies.
    pub bytes: u64,
}

impl Shared {
    /// Removes what no runner stored or revalidated for `age` (before
    /// `now`): index objects last written before then, then bodies written
    /// before then that no remaining index object names.
    ///
    /// Safe beside running runners: a body uploaded since the cutoff is
    /// never removed, an index object is checked again just before it is
    /// removed (one rewritten meanwhile stays), and an index object whose
    /// body went anyway is a miss that the next runner's upload repairs.
    pub async fn expire(&self, age: Duration, now: std::time::SystemTime) -> Result<ExpireReport> {
        let inner = &self.inner;
        let err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let cutoff_ms = i64::try_from(crate::meta::unix_ms(
            now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH),
        ))
        .unwrap_or(i64::MAX);
        let mut report = ExpireReport::default();
        let mut kept = std::collections::HashSet::new();
        let index: Vec<_> = inner
            .store
            .list(Some(&inner.name("index".into())))
            .collect()
            .await;
        for object in index {
            let object = object.map_err(|e| err("listing index objects", e))?;
            if object.last_modified.timestamp_millis() < cutoff_ms {
                // Checked again: a runner may have just rewritten it.
                match inner.store.head(&object.location).await {
                    Ok(now) if now.last_modified.timestamp_millis() < cutoff_ms => {
                        match inner.store.delete(&object.location).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                                report.index_objects += 1;
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
            let bytes = match inner.store.get(&object.location).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map_err(|e| err("reading an index object", e))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(err("reading an index object", e)),
            };
            if let Ok(index) = serde_json::from_slice::<IndexObject>(&bytes) {
                if let Some(path) = index
                    .meta
                    .integrity
                    .parse::<Integrity>()
                    .ok()
                    .and_then(|i| inner.content_path(&i))
                {
                    kept.insert(path);
                }
            }
        }
        let bodies: Vec<_> = inner
            .store
            .list(Some(&inner.name("content".into())))
            .collect()
            .await;
        for object in bodies {
            let object = object.map_err(|e| err("listing bodies", e))?;
            if object.last_modified.timestamp_millis() >= cutoff_ms
                || kept.contains(&object.location)
            {
                continue;
            }
            match inner.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    report.bodies += 1;
                    report.bytes += object.size;
                }
                Err(e) => return Err(err("removing a body", e)),
            }
        }
        Ok(report)
    }
}

impl Committed for Shared {
    fn committed(&self, entry: &Entry) {
        self.upload(entry);
    }
}

impl Inner {
    fn failed(&self, op: &str, error: &dyn fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .resting_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(tokio::time::Instant::now() + BACKOFF);
        tracing::warn!(error = %error, "shared cache tier failed while {op}; asking the origin");
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

    fn abandoned(&self, modified_ms: i64) -> bool {
        let now =
            i64::try_from(crate::meta::unix_ms(std::time::SystemTime::now())).unwrap_or(i64::MAX);
        let ttl = i64::try_from(FLEET_LOCK_TTL.as_millis()).unwrap_or(i64::MAX);
        now.saturating_sub(modified_ms) > ttl
    }

    fn lead(&self, key: &str) {
        self.leading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned());
    }

    /// Forgets a lock this runner held; whether it held it.
    fn unlead(&self, key: &str) -> bool {
        self.leading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key)
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
    /// is not there yet).
    async fn upload(&self, upload: &Upload) -> Result<()> {
        let shared_err = |op, e: object_store::Error| Error::Shared {
            op,
            source: Box::new(e),
        };
        let Some(path) = self.content_path(&upload.integrity) else {
            return Ok(());
        };
        match self.store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                let file = content_path(&self.dir, &upload.integrity);
                let mut body = tokio::fs::File::open(&file)
                    .await
                    .map_err(|e| Error::io("reading a body to upload", e))?;
                let mut out = object_store::buffered::BufWriter::new(self.store.clone(), path);
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
            }
            Err(e) => return Err(shared_err("checking for a body", e)),
        }
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
        if self.unlead(&upload.key) {
            let _ = self.store.delete(&self.lock_path(&upload.key)).await;
        }
        Ok(())
    }
}

/// Runs the queued uploads one at a time, until every [`Shared`] is gone.
async fn upload_task(inner: Arc<Inner>, mut rx: mpsc::Receiver<Upload>) {
    while let Some(upload) = rx.recv().await {
        if let Err(e) = inner.upload(&upload).await {
            inner.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, key = %upload.key, "shared cache tier upload failed");
            if inner.unlead(&upload.key) {
                let _ = inner.store.delete(&inner.lock_path(&upload.key)).await;
            }
        }
        inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
    }
}
