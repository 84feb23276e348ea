//! Storage behind a trait: what the caching path asks of a store, and what
//! the handlers a store hands out tell it back.
//!
//! As in pingora-cache, a lookup finds an [`Entry`]; the storage then hands
//! out a *hit handler* to read its body ([`Storage::hit`], the disk store's
//! `Body` from `read.rs`) or, after a miss, a *miss handler* to write one
//! ([`Storage::miss`], its `Writer` from `write.rs`). The handlers live
//! below the store and know nothing of it: what they
//! must report goes through the two small traits here, which the store
//! implements:
//! - `Verdicts`: a read found a body whole and matching (the store
//!   remembers it, and may keep it in memory), or corrupt (the store drops
//!   the entry, so the next request refetches it);
//! - `Admission`: a write put a body on disk under its content address
//!   (the store indexes it, counts it and evicts for space), or gave up.
//!
//! The single-flight lock (`lock.rs`) is no part of this: it knows nothing
//! of storage, and the store wires it to the write in flight.

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use cacache::Integrity;
use futures_util::future::BoxFuture;

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::meta::Meta;

/// What the caching path (`cache.rs`) asks of a store.
pub trait Storage {
    /// The hit handler: a stored body, ready to read.
    type Hit;
    /// The miss handler: a body being written, visible once committed and
    /// gone if dropped before.
    type Miss;

    /// The committed entry for a key, if any, marked used.
    fn lookup(&self, key: &CacheKey) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// Opens an entry's body. [`Error::Corrupt`] (the entry dropped) when
    /// it is known bad before anything was read.
    fn hit(&self, entry: &Entry) -> impl Future<Output = Result<Self::Hit>> + Send;

    /// Starts writing a body for `key`, stored with `meta`.
    fn miss(&self, key: &CacheKey, meta: Meta) -> impl Future<Output = Result<Self::Miss>> + Send;

    /// Replaces an entry's metadata without touching its body (after a
    /// 304), returning the entry as it is now.
    fn update_meta(&self, entry: &Entry, meta: Meta) -> impl Future<Output = Result<Entry>> + Send;
}

/// What a hit handler tells the storage it reads from.
pub(crate) trait Verdicts: Send + Sync + fmt::Debug {
    /// A body was read whole and matched its hashes. `body` is the whole
    /// body when the reader kept it for the memory tier.
    fn matched(&self, integrity: &Integrity, body: Option<Bytes>);

    /// The entry's body failed a check or is gone: the storage drops the
    /// entry and returns the error to report ([`Error::Corrupt`]).
    fn corrupt<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Error>;
}

/// What a miss handler tells the storage it writes into.
pub(crate) trait Admission: Send + Sync + fmt::Debug {
    /// A body is on disk under its content address `integrity`, with its
    /// final `meta`: make it the key's entry. On an error the storage has
    /// already removed what it could of it.
    fn admit<'a>(
        &'a self,
        key: &'a CacheKey,
        integrity: &'a Integrity,
        meta: &'a Meta,
    ) -> BoxFuture<'a, Result<()>>;

    /// A write was given up before it was admitted (counted).
    fn aborted(&self);
}

/// Told of each committed body of a write it was attached to (the shared
/// tier uploads it). Called after the entry is indexed; never waits.
pub(crate) trait Committed: Send + Sync + fmt::Debug {
    /// `entry` is committed in the local store.
    fn committed(&self, entry: &Entry);
}
