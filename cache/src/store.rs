//! The on-disk store: cacache content plus an index of request keys.
//!
//! Layout (all cacache's, in the cache directory):
//! - `content-v2/sha256/…`: bodies, named by their hash, so identical bodies
//!   under different URLs are stored once;
//! - `index-v5/…`: one append-only bucket per key; each entry holds the
//!   integrity, size, time and our [`Meta`] as JSON;
//! - `tmp/`: bodies being written; a dropped writer deletes its file;
//! - `cistern-lru.json`: last-access times (ours, see `evict.rs`).
//!
//! The store is the directory: a new [`Store`] on the same path after a
//! restart sees every committed entry. cacache writes content with
//! temp-file-and-rename and index entries as single checksummed appends, so
//! concurrent writers (tasks or processes) cannot corrupt each other; the
//! last commit for a key wins.
//!
//! Reads are verified against the hash: whole-body reads before anything is
//! returned, streaming reads when the stream ends (see `read.rs`). A body
//! that fails is dropped from the index and reported as
//! [`Error::Corrupt`], which callers treat as a miss.
//!
//! The store is where the crate's parts are wired together. It implements
//! [`Storage`]: a lookup reads the index, a hit hands out a reader of the
//! body (`read.rs`), a miss a [`Writer`] (`write.rs`); both handlers report
//! back through the store's `Verdicts` and `Admission` (see
//! `storage.rs`). And it joins the single-flight lock (`lock.rs`), which
//! knows nothing of storage, to the writes in flight: a leader publishes
//! its write's [`Tail`], which its followers read along with ([`Flight`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cacache::Integrity;
use futures_util::future::BoxFuture;

use crate::conditional::content_length;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::evict::LruTable;
use crate::hot::HotBodies;
use crate::key::CacheKey;
use crate::layout::{bucket_path, content_path};
use crate::lock::{self, Flights, WaitOutcome};
use crate::meta::{unix_ms, Meta};
use crate::read::{read_whole, Body, BodyReader, RangeReader, Source};
use crate::storage::{Admission, Storage, Verdicts};
use crate::tail::Tail;
use crate::write::{Target, Writer};

/// File holding last-access times, beside cacache's directories.
const LRU_FILE: &str = "cistern-lru.json";
/// Touched by maintenance that removes entries (`cistern cache purge`,
/// `verify`), so a server on the same directory reloads its index table.
const CHANGED_FILE: &str = "cistern-changed";

/// Typed store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Evict least-recently-used entries above this many bytes of distinct
    /// content. `None`: no limit.
    pub max_bytes: Option<u64>,
    /// Bodies larger than this are passed through and never stored: one
    /// large download must not evict the files every job uses (or, above
    /// `max_bytes`, everything including itself). Known from
    /// `Content-Length` before anything is written; a body without one is
    /// aborted once it grows past the limit. `None`: no limit.
    pub max_object: Option<u64>,
    /// How long single-flight followers wait for the leader (for its
    /// download to start, when they read along with it).
    pub lock_timeout: Duration,
    /// Bodies up to this size are read and verified whole before a hit is
    /// reported, so a corrupt one becomes a clean miss. Larger ones stream
    /// block by block, each verified before it is handed out (see
    /// `read.rs`). Default [`DEFAULT_VERIFY_BEFORE_SERVE`].
    pub verify_before_serve: u64,
    /// Memory for verified hot bodies (see `hot.rs`); 0 keeps none.
    /// Default [`DEFAULT_MEMORY_SIZE`].
    pub memory_size: u64,
    /// Largest body kept in memory. Default [`DEFAULT_MEMORY_MAX_OBJECT`].
    pub memory_max_object: u64,
    /// Stream large bodies from memory maps of their files rather than
    /// reading them into buffers (see `map.rs`). Default on.
    pub map_reads: bool,
}

/// Bodies up to 256 KiB (one block) are verified before they are served.
/// Streaming a 1 MiB body block by block, its reads overlapped with its
/// sending, served about 30% more 1 MiB hits per second than reading it
/// whole first.
pub const DEFAULT_VERIFY_BEFORE_SERVE: u64 = 256 * 1024;

/// 256 MiB of hot bodies in memory by default (Squid's `cache_mem`
/// default too): a CI fleet's everyday set of package indexes and packages.
pub const DEFAULT_MEMORY_SIZE: u64 = 256 * 1024 * 1024;

/// Bodies up to 4 MiB are kept in memory by default: package indexes and
/// most packages, not the large archives a whole file of memory per
/// request would be wasted on.
pub const DEFAULT_MEMORY_MAX_OBJECT: u64 = 4 * 1024 * 1024;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: None,
            max_object: None,
            lock_timeout: Duration::from_secs(30),
            verify_before_serve: DEFAULT_VERIFY_BEFORE_SERVE,
            memory_size: DEFAULT_MEMORY_SIZE,
            memory_max_object: DEFAULT_MEMORY_MAX_OBJECT,
            map_reads: true,
        }
    }
}

/// Counters since the store was opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) aborted_writes: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
}

/// A snapshot of the store's size and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Indexed keys.
    pub entries: u64,
    /// Distinct content bytes referenced by the index.
    pub bytes: u64,
    /// Configured limit, if any.
    pub max_bytes: Option<u64>,
    /// Lookups served fresh from the cache.
    pub hits: u64,
    /// Lookups that needed revalidation.
    pub stale: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Requests that skipped the cache.
    pub bypasses: u64,
    /// Bodies committed.
    pub writes: u64,
    /// Writes dropped or failed before commit.
    pub aborted_writes: u64,
    /// Keys evicted for space.
    pub evictions: u64,
    /// Entries dropped because their content failed verification.
    pub corrupt: u64,
    /// Origin fetches in flight under single-flight.
    pub in_flight: u64,
    /// Bytes of verified bodies held in memory.
    pub memory_bytes: u64,
    /// Bodies held in memory.
    pub memory_entries: u64,
    /// Hits whose body was sent from memory.
    pub memory_hits: u64,
}

/// Result of [`Store::lock`]: the store's single-flight, whose leader
/// publishes its write's [`Tail`] for its followers to read along with.
pub type Flight = lock::Flight<Tail>;
/// Held by the leader of a fetch (see [`lock::FlightGuard`]).
pub type FlightGuard = lock::FlightGuard<Tail>;
/// Held by a follower of a fetch (see [`lock::FlightWaiter`]).
pub type FlightWaiter = lock::FlightWaiter<Tail>;
/// What a follower of a download got (see [`lock::Following`]).
pub type Following = lock::Following<Tail>;

/// Result of [`Store::single_flight`].
#[derive(Debug)]
pub enum SingleFlight<T, E> {
    /// This caller led: the fetch ran and returned this.
    Fetched(Result<T, E>),
    /// An entry is committed (by this or another leader): serve it.
    Cached(Box<Entry>),
    /// Following did not produce an entry; fetch from origin without
    /// storing.
    GoToOrigin(WaitOutcome),
}

/// The cache store. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: StoreConfig,
    table: Mutex<LruTable>,
    flights: Flights<Tail>,
    counters: Counters,
    evicting: tokio::sync::Mutex<()>,
    /// Serialises index writes with the in-memory table update that follows
    /// them: without it, two commits for one key can finish their table
    /// updates in the opposite order of their index lines, and the content of
    /// the newest line is deleted as the older one's orphan.
    indexing: tokio::sync::Mutex<()>,
    /// Integrities whose content was hashed whole by this process (written,
    /// read to the end, or verified); ranged reads of these seek directly.
    verified: Mutex<HashSet<String>>,
    /// Parsed index entries by key, each with the stamp of the bucket file
    /// it was read from (see [`Store::get`]).
    memo: Mutex<HashMap<String, Memo>>,
    /// Verified small bodies in memory, by integrity.
    hot: HotBodies,
    /// The change marker's mtime when the table was last loaded.
    changed_seen: Mutex<Option<SystemTime>>,
}

/// A parsed index entry and the bucket file's (length, mtime) when read.
#[derive(Debug)]
struct Memo {
    stamp: BucketStamp,
    entry: Entry,
}

type BucketStamp = (u64, Option<SystemTime>);

/// Most parsed entries kept in memory; past it the memo starts over.
const MEMO_LIMIT: usize = 16 * 1024;

impl Store {
    /// Opens (or creates) the cache in `dir`, loading the index.
    pub async fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io("creating the cache directory", e))?;
        let changed = changed_stamp(&dir);
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                table: Mutex::new(LruTable::default()),
                flights: Flights::default(),
                counters: Counters::default(),
                evicting: tokio::sync::Mutex::new(()),
                indexing: tokio::sync::Mutex::new(()),
                verified: Mutex::new(HashSet::new()),
                memo: Mutex::new(HashMap::new()),
                hot: HotBodies::new(config.memory_size, config.memory_max_object),
                changed_seen: Mutex::new(changed),
                config,
            }),
        };
        store.reload().await?;
        Ok(store)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, LruTable> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the in-memory table from the index on disk (and the saved
    /// access times), e.g. after another process wrote to the directory.
    pub async fn reload(&self) -> Result<()> {
        let dir = self.inner.dir.clone();
        let (entries, access) = tokio::task::spawn_blocking(move || {
            let (entries, _skipped) = read_index(&dir);
            let access: HashMap<String, u64> = std::fs::read(dir.join(LRU_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            (entries, access)
        })
        .await
        .map_err(|e| Error::io("loading the index", std::io::Error::other(e)))?;
        let mut fresh = LruTable::default();
        for (key, integrity, size, time) in entries {
            let last = access.get(&key).copied().unwrap_or(time).max(time);
            fresh.insert(&key, &integrity, size, last);
        }
        *self.table() = fresh;
        self.memo().clear();
        Ok(())
    }

    /// Tells other processes on this directory that entries were removed
    /// behind their backs (see [`Store::reload_if_changed`]).
    pub(crate) async fn note_change(&self) {
        let path = self.inner.dir.join(CHANGED_FILE);
        let now = unix_ms(SystemTime::now()).to_string();
        if let Err(e) = tokio::fs::write(&path, now).await {
            tracing::warn!(error = %e, "cannot mark the cache as changed");
        }
    }

    /// Reloads the in-memory table (size, LRU order) if another process
    /// removed entries since it was loaded: a running server then accounts
    /// for a `cistern cache purge` instead of evicting live entries for
    /// space that is already free. Saves access times first, so none are
    /// lost. Returns whether it reloaded.
    pub async fn reload_if_changed(&self) -> Result<bool> {
        let stamp = changed_stamp(&self.inner.dir);
        {
            let mut seen = self
                .inner
                .changed_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *seen == stamp {
                return Ok(false);
            }
            *seen = stamp;
        }
        self.flush().await?;
        self.reload().await?;
        Ok(true)
    }

    fn memo(&self) -> MutexGuard<'_, HashMap<String, Memo>> {
        self.inner
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks up the committed entry for a key, marking it used.
    ///
    /// An entry whose metadata cannot be decoded is dropped and reported as
    /// absent.
    ///
    /// Parsing a bucket (every line checksummed, the metadata JSON decoded)
    /// cost more than serving a small body, so parsed entries are kept in
    /// memory and reused while the bucket file keeps the same length and
    /// mtime. cacache only ever appends to a bucket (a removal too), so any
    /// write, by this process or another (`cistern cache purge`), changes
    /// the stamp and the bucket is read again. The stamp is one `stat` of a
    /// small, hot file, done in place.
    pub async fn get(&self, key: &CacheKey) -> Result<Option<Entry>> {
        let Some(stamp) = bucket_stamp(&self.inner.dir, key.as_str()) else {
            self.memo().remove(key.as_str());
            return Ok(None);
        };
        let memoised = self
            .memo()
            .get(key.as_str())
            .filter(|m| m.stamp == stamp)
            .map(|m| m.entry.clone());
        if let Some(entry) = memoised {
            self.touch(key, &entry);
            return Ok(Some(entry));
        }
        let Some(entry) = self.read_entry(key).await? else {
            self.memo().remove(key.as_str());
            return Ok(None);
        };
        {
            let mut memo = self.memo();
            if memo.len() >= MEMO_LIMIT {
                memo.clear();
            }
            // Stamped before the read: a write in between leaves a stale
            // stamp, so the next lookup reads the bucket again.
            memo.insert(
                key.as_str().to_owned(),
                Memo {
                    stamp,
                    entry: entry.clone(),
                },
            );
        }
        self.touch(key, &entry);
        Ok(Some(entry))
    }

    /// Marks an entry used in the LRU table.
    fn touch(&self, key: &CacheKey, entry: &Entry) {
        let now_ms = unix_ms(SystemTime::now());
        let mut table = self.table();
        if table.contains(key.as_str()) {
            table.touch(key.as_str(), now_ms);
        } else {
            // Written by another process since we loaded the index.
            table.insert(
                key.as_str(),
                &entry.integrity.to_string(),
                entry.size(),
                now_ms,
            );
        }
    }

    /// Reads and decodes a key's bucket.
    async fn read_entry(&self, key: &CacheKey) -> Result<Option<Entry>> {
        let found = cacache::index::find_async(&self.inner.dir, key.as_str())
            .await
            .map_err(|e| Error::cacache("reading the index", e))?;
        let Some(found) = found else {
            return Ok(None);
        };
        let meta: Meta = match serde_json::from_value(found.metadata) {
            Ok(meta) => meta,
            Err(source) => {
                let err = Error::Metadata {
                    key: key.to_string(),
                    source,
                };
                tracing::warn!(error = %err, "dropping cache entry");
                self.remove(key).await?;
                return Ok(None);
            }
        };
        Ok(Some(Entry {
            key: key.clone(),
            meta,
            integrity: found.integrity,
        }))
    }

    /// Opens an entry's body: from memory when it is hot (see `hot.rs`),
    /// else read and verified whole when it is at most
    /// [`StoreConfig::verify_before_serve`] bytes, streaming otherwise.
    ///
    /// Returns [`Error::Corrupt`] (entry dropped) if the small-body check
    /// fails or the content is missing.
    pub async fn body(&self, entry: &Entry) -> Result<Body> {
        if let Some(body) = self.hot_body(entry) {
            return Ok(Body::Full(body));
        }
        if entry.size() <= self.inner.config.verify_before_serve {
            let path = self.content_path(&entry.integrity);
            Ok(Body::Full(read_whole(path, entry, self).await?))
        } else {
            Ok(Body::Stream(Box::new(self.reader(entry).await?)))
        }
    }

    /// The entry's body if it is held in memory.
    fn hot_body(&self, entry: &Entry) -> Option<Bytes> {
        if !self.inner.hot.admits(entry.size()) {
            return None;
        }
        let body = self
            .inner
            .hot
            .get(&entry.integrity.to_string())
            .filter(|body| body.len() as u64 == entry.size())?;
        self.inner
            .counters
            .memory_hits
            .fetch_add(1, Ordering::Relaxed);
        Some(body)
    }

    /// Where a reader of the entry's body reads from, and tells.
    fn source(&self, entry: &Entry) -> Source {
        Source {
            path: self.content_path(&entry.integrity),
            map_reads: self.inner.config.map_reads,
            keep: self.inner.hot.admits(entry.size()),
            verdicts: Arc::new(self.clone()),
        }
    }

    /// A streaming reader of the whole body, verified when it ends.
    pub async fn reader(&self, entry: &Entry) -> Result<BodyReader> {
        BodyReader::open(self.source(entry), entry).await
    }

    /// A streaming reader of bytes `start..=end` of the body.
    pub async fn range(&self, entry: &Entry, start: u64, end: u64) -> Result<RangeReader> {
        RangeReader::satisfiable(entry.size(), start, end)?;
        if let Some(body) = self.hot_body(entry) {
            return Ok(RangeReader::in_memory(&body, start, end));
        }
        let verified = self.is_verified(&entry.integrity);
        RangeReader::open(self.source(entry), entry, start, end, verified).await
    }

    async fn index_insert(&self, key: &CacheKey, integrity: &Integrity, meta: &Meta) -> Result<()> {
        let value = serde_json::to_value(meta).map_err(|source| Error::Metadata {
            key: key.to_string(),
            source,
        })?;
        let size = usize::try_from(meta.size).unwrap_or(usize::MAX);
        let opts = cacache::WriteOpts::new()
            .integrity(integrity.clone())
            .size(size)
            .time(u128::from(meta.stored_at_ms))
            .metadata(value);
        let _indexing = self.inner.indexing.lock().await;
        self.memo().remove(key.as_str());
        cacache::index::insert_async(&self.inner.dir, key.as_str(), opts)
            .await
            .map_err(|e| Error::cacache("writing the index", e))?;
        let orphan = self.table().insert(
            key.as_str(),
            &integrity.to_string(),
            meta.size,
            unix_ms(SystemTime::now()),
        );
        if let Some(orphan) = orphan {
            self.remove_content_if_unreferenced(&orphan).await;
        }
        Ok(())
    }

    /// Removes a key from the index, and its content if no other key uses it.
    pub async fn remove(&self, key: &CacheKey) -> Result<()> {
        self.remove_key(key.as_str()).await
    }

    async fn remove_key(&self, key: &str) -> Result<()> {
        let _indexing = self.inner.indexing.lock().await;
        self.memo().remove(key);
        cacache::index::delete_async(&self.inner.dir, key)
            .await
            .map_err(|e| Error::cacache("removing an index entry", e))?;
        let orphan = self.table().remove(key);
        if let Some(orphan) = orphan {
            self.remove_content_if_unreferenced(&orphan).await;
        }
        Ok(())
    }

    /// Deletes content unless a key references it again by now.
    async fn remove_content_if_unreferenced(&self, integrity: &str) {
        if self.table().references(integrity) {
            return;
        }
        self.inner.hot.remove(integrity);
        let Ok(sri) = integrity.parse::<Integrity>() else {
            return;
        };
        if let Err(e) = cacache::remove_hash(&self.inner.dir, &sri).await {
            tracing::debug!(error = %e, "cache content already gone");
        }
    }

    /// Drops an entry whose content failed verification; returns the error
    /// to report.
    async fn drop_corrupt(&self, key: &CacheKey) -> Error {
        self.inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %key, "cached content failed its integrity check; dropping entry");
        let integrity = self
            .table()
            .keys()
            .into_iter()
            .find(|(k, _)| k == key.as_str())
            .map(|(_, i)| i);
        if let Err(e) = self.remove(key).await {
            tracing::warn!(error = %e, key = %key, "could not drop corrupt cache entry");
        }
        // The content is bad for every key that shares it.
        if let Some(sri) = integrity.and_then(|i| i.parse::<Integrity>().ok()) {
            self.mark_verified(&sri, false);
            self.inner.hot.remove(&sri.to_string());
            let _ = cacache::remove_hash(&self.inner.dir, &sri).await;
        }
        Error::Corrupt {
            key: key.to_string(),
        }
    }

    /// Path of an integrity's content file (cacache's content-v2 layout).
    fn content_path(&self, integrity: &Integrity) -> PathBuf {
        content_path(&self.inner.dir, integrity)
    }

    /// Joins the single-flight for a key: lead the origin fetch, or follow
    /// the current leader. See `lock.rs` for the protocol.
    pub fn lock(&self, key: &CacheKey) -> Flight {
        self.inner
            .flights
            .acquire(key.as_str(), self.inner.config.lock_timeout)
    }

    /// Waits on the fetch in flight for a key, if any, without leading one
    /// (e.g. for a range request, which is forwarded rather than stored).
    pub fn follow(&self, key: &CacheKey) -> Option<FlightWaiter> {
        self.inner
            .flights
            .follow(key.as_str(), self.inner.config.lock_timeout)
    }

    /// Single-flight around `fetch`, which should fetch from origin and
    /// commit a [`Writer`], returning `Ok` when it stored an entry.
    ///
    /// The leader re-checks the store first (an earlier leader may just have
    /// committed), so for a key only one `fetch` runs at a time and a
    /// committed entry is never fetched again. Followers get the committed
    /// entry, or [`SingleFlight::GoToOrigin`] when the leader failed or took
    /// longer than the lock timeout.
    pub async fn single_flight<F, Fut, T, E>(
        &self,
        key: &CacheKey,
        fetch: F,
    ) -> Result<SingleFlight<T, E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        match self.lock(key) {
            Flight::Leader(guard) => {
                if let Some(entry) = self.get(key).await? {
                    guard.finish(true);
                    return Ok(SingleFlight::Cached(Box::new(entry)));
                }
                let result = fetch().await;
                guard.finish(result.is_ok());
                Ok(SingleFlight::Fetched(result))
            }
            Flight::Follower(waiter) => match waiter.wait().await {
                WaitOutcome::Committed => match self.get(key).await? {
                    Some(entry) => Ok(SingleFlight::Cached(Box::new(entry))),
                    None => Ok(SingleFlight::GoToOrigin(WaitOutcome::Failed)),
                },
                other => Ok(SingleFlight::GoToOrigin(other)),
            },
        }
    }

    /// Size and counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let table = self.table();
        Stats {
            entries: table.len() as u64,
            bytes: table.bytes(),
            max_bytes: self.inner.config.max_bytes,
            hits: load(&c.hits),
            stale: load(&c.stale),
            misses: load(&c.misses),
            bypasses: load(&c.bypasses),
            writes: load(&c.writes),
            aborted_writes: load(&c.aborted_writes),
            evictions: load(&c.evictions),
            corrupt: load(&c.corrupt),
            in_flight: self.inner.flights.len() as u64,
            memory_bytes: self.inner.hot.bytes(),
            memory_entries: self.inner.hot.len() as u64,
            memory_hits: load(&c.memory_hits),
        }
    }

    fn mark_verified(&self, integrity: &Integrity, ok: bool) {
        let mut set = self
            .inner
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ok {
            set.insert(integrity.to_string());
        } else {
            set.remove(&integrity.to_string());
        }
    }

    fn is_verified(&self, integrity: &Integrity) -> bool {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&integrity.to_string())
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Evicts least-recently-used entries if the store is over its limit.
    /// Only one eviction runs at a time; a concurrent call returns at once.
    pub async fn evict_if_needed(&self) -> Result<u64> {
        let Some(limit) = self.inner.config.max_bytes else {
            return Ok(0);
        };
        if self.table().bytes() <= limit {
            return Ok(0);
        }
        let Ok(_running) = self.inner.evicting.try_lock() else {
            return Ok(0);
        };
        self.evict_to(limit).await
    }

    /// Evicts least-recently-used entries until at most `limit` bytes of
    /// content remain. Returns the number of keys evicted.
    pub async fn evict_to(&self, limit: u64) -> Result<u64> {
        let victims = self.table().evict_until(limit);
        let count = victims.len() as u64;
        for victim in victims {
            // Under the index lock, like every index write: a commit of the
            // same key since it was chosen must not lose its new line.
            let indexing = self.inner.indexing.lock().await;
            if !self.table().contains(&victim.key) {
                cacache::index::delete_async(self.dir(), &victim.key)
                    .await
                    .map_err(|e| Error::cacache("evicting an index entry", e))?;
            }
            drop(indexing);
            if let Some(integrity) = victim.orphaned_integrity {
                self.remove_content_if_unreferenced(&integrity).await;
            }
            tracing::debug!(key = %victim.key, "evicted cache entry");
        }
        if count > 0 {
            self.counters()
                .evictions
                .fetch_add(count, Ordering::Relaxed);
            self.flush().await?;
        }
        Ok(count)
    }

    /// Saves last-access times so LRU order survives a restart. Call it at
    /// shutdown; eviction and gc also save.
    pub async fn flush(&self) -> Result<()> {
        let times = self.table().access_times();
        let json = serde_json::to_vec(&times).map_err(|source| Error::Metadata {
            key: LRU_FILE.into(),
            source,
        })?;
        let path = self.inner.dir.join(LRU_FILE);
        let tmp = self.inner.dir.join(format!("{LRU_FILE}.tmp"));
        tokio::fs::write(&tmp, json)
            .await
            .map_err(|e| Error::io("saving access times", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| Error::io("saving access times", e))
    }
}

impl Storage for Store {
    type Hit = Body;
    type Miss = Writer;

    /// [`Store::get`].
    async fn lookup(&self, key: &CacheKey) -> Result<Option<Entry>> {
        self.get(key).await
    }

    /// [`Store::body`].
    async fn hit(&self, entry: &Entry) -> Result<Body> {
        self.body(entry).await
    }

    /// Nothing is visible until [`Writer::commit`]; dropping the writer
    /// aborts. The expected length comes from `meta.headers`'
    /// `Content-Length`, when present.
    async fn miss(&self, key: &CacheKey, meta: Meta) -> Result<Writer> {
        let expected = content_length(&meta.headers);
        let config = &self.inner.config;
        let target = Target {
            dir: self.inner.dir.clone(),
            max_object: config.max_object,
            stall: config.lock_timeout,
            map_reads: config.map_reads,
            admission: Arc::new(self.clone()),
        };
        Writer::open(target, key.clone(), meta, expected).await
    }

    /// Keeps the body and what was recorded of it (size, hashes).
    async fn update_meta(&self, entry: &Entry, meta: Meta) -> Result<Entry> {
        let meta = Meta {
            size: entry.meta.size,
            integrity: entry.meta.integrity.clone(),
            check: entry.meta.check.clone(),
            blocks: entry.meta.blocks.clone(),
            ..meta
        };
        self.index_insert(&entry.key, &entry.integrity, &meta)
            .await?;
        Ok(Entry {
            key: entry.key.clone(),
            meta,
            integrity: entry.integrity.clone(),
        })
    }
}

/// What the readers found (`read.rs`).
impl Verdicts for Store {
    fn matched(&self, integrity: &Integrity, body: Option<Bytes>) {
        self.mark_verified(integrity, true);
        if let Some(body) = body {
            self.inner.hot.insert(integrity.to_string(), body);
        }
    }

    fn corrupt<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Error> {
        Box::pin(self.drop_corrupt(key))
    }
}

/// Bodies the writers put in place (`write.rs`).
impl Admission for Store {
    fn admit<'a>(
        &'a self,
        key: &'a CacheKey,
        integrity: &'a Integrity,
        meta: &'a Meta,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Err(e) = self.index_insert(key, integrity, meta).await {
                self.remove_content_if_unreferenced(&meta.integrity).await;
                return Err(e);
            }
            self.mark_verified(integrity, true);
            self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = %key, size = meta.size, "cache entry committed");
            if let Err(e) = self.evict_if_needed().await {
                tracing::warn!(error = %e, "cache eviction failed");
            }
            Ok(())
        })
    }

    fn aborted(&self) {
        self.inner
            .counters
            .aborted_writes
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The change marker's mtime, if there is one.
fn changed_stamp(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join(CHANGED_FILE))
        .and_then(|m| m.modified())
        .ok()
}

/// The bucket file's length and mtime; `None` when there is no bucket.
fn bucket_stamp(dir: &Path, key: &str) -> Option<BucketStamp> {
    let meta = std::fs::metadata(bucket_path(dir, key)).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// An index entry as [`Store::reload`] loads it: key, integrity, size, time.
type IndexRow = (String, String, u64, u64);

/// Reads every index bucket; returns the entries and how many buckets could
/// not be read (each logged). A cache directory without an index yet (a
/// fresh one) has no entries and nothing to warn about, and a bucket removed
/// while the walk runs is not an error either.
fn read_index(dir: &Path) -> (Vec<IndexRow>, usize) {
    let mut entries = Vec::new();
    let mut skipped = 0;
    if !dir.join("index-v5").is_dir() {
        return (entries, skipped);
    }
    for item in cacache::index::ls(dir) {
        match item {
            Ok(m) => entries.push((
                m.key,
                m.integrity.to_string(),
                m.size as u64,
                u64::try_from(m.time).unwrap_or(u64::MAX),
            )),
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                skipped += 1;
                tracing::warn!(error = %e, "skipping unreadable cache index bucket");
            }
        }
    }
    (entries, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_cache_directory_reads_no_bucket_and_skips_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_index(dir.path()), (Vec::new(), 0));
        let store = Store::open(dir.path(), StoreConfig::default())
            .await
            .unwrap();
        assert_eq!(store.stats().entries, 0);
        let (_, skipped) = read_index(dir.path());
        assert_eq!(skipped, 0);
    }
}
