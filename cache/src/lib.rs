//! `cistern-cache`: the store and caching policy behind cistern's
//! transparent package-repository proxy.
//!
//! It is not an HTTP client or server: the proxy does the network I/O and
//! calls in here at each step (see [`cache`] for the flow).
//!
//! # What lives where
//!
//! The modules stack in layers, from the ground up. Each imports only from
//! layers below its own, so no two modules import each other and none
//! imports back up; `tests/layers.rs` holds the crate to this table.
//!
//! 1. The ground, which knows nothing of storage:
//!    - [`error`]; [`reason`]: why a request bypassed, missed or was not
//!      stored;
//!    - [`pattern`]: globs for rules and `purge`;
//!    - [`conditional`]: client `If-None-Match`/`If-Modified-Since`/`Range`;
//!    - `check.rs`: the block format and the hashes a body is read back
//!      against;
//!    - `layout.rs`: where cacache keeps bodies and index buckets;
//!    - `map.rs`: content files mapped into memory (the crate's only
//!      `unsafe`);
//!    - `hot.rs`: verified hot bodies kept in memory; `evict.rs`: LRU
//!      bookkeeping and the eviction choice;
//!    - [`lock`]: single-flight for concurrent misses, keyed by strings and
//!      generic over what a leader hands its followers.
//! 2. [`key`]: request → cache key (method + normalised URL); [`rules`]:
//!    per-domain/path modes and the package-repository defaults.
//! 3. [`meta`]: what is stored beside each body.
//! 4. [`Entry`] (`entry.rs`): a committed entry (key, meta, content
//!    address); [`policy`]: I/O-free decisions on top of
//!    http-cache-semantics; [`tail`]: reading a write in progress, behind
//!    the writer.
//! 5. [`storage`]: the [`Storage`] trait, as in pingora-cache: a lookup,
//!    then a hit handler or a miss handler; and what those handlers tell a
//!    store back.
//! 6. The handlers, which know the trait's types and never the store:
//!    [`read`] (hit handlers: whole, streaming and ranged reads, each
//!    verified) and [`write`](mod@write) (the miss handler: a streaming write,
//!    whose [`Tail`] requests that follow the download read).
//! 7. [`store`]: the cacache-backed, content-addressed disk store. It
//!    implements [`Storage`], keeps the index, the memory tier and the size
//!    limit, and wires the lock to the writes in flight: a leader publishes
//!    its write's tail ([`Flight`]).
//!    [`shared`]: the shared tier on S3-compatible object storage, filled
//!    into and uploaded from the local store through the handlers.
//! 8. [`maintain`]: verify, gc and purge; [`cache`]: the state machine the
//!    proxy drives (`Cache::lookup` …).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
mod check;
pub mod conditional;
mod entry;
pub mod error;
mod evict;
mod hot;
pub mod key;
mod layout;
pub mod lock;
pub mod maintain;
mod map;
pub mod meta;
pub mod pattern;
pub mod policy;
pub mod read;
pub mod reason;
pub mod rules;
pub mod shared;
pub mod storage;
pub mod store;
pub mod tail;
pub mod write;

pub use cache::{Cache, Hit, Lookup, Miss, Revalidation, Stale, StoreStart};
pub use conditional::{
    content_length, content_range, evaluate_conditionals, evaluate_range, Conditional,
    RangeDecision,
};
pub use entry::Entry;
pub use error::{Error, Result};
pub use key::CacheKey;
pub use lock::WaitOutcome;
pub use maintain::{GcReport, VerifyReport};
pub use map::mapped_source;
pub use meta::Meta;
pub use policy::{Policy, PolicyConfig};
pub use read::{Body, BodyReader, RangeReader};
pub use reason::{BypassReason, HitReason, MissReason, NoStoreReason};
pub use rules::{Mode, RuleConfig, Rules};
pub use shared::{Credentials, ExpireReport, Expiry, Shared, SharedConfig, SharedStats};
pub use storage::Storage;
pub use store::{
    Flight, FlightGuard, FlightWaiter, Following, SingleFlight, Stats, Store, StoreConfig,
    DEFAULT_MEMORY_MAX_OBJECT, DEFAULT_MEMORY_SIZE, DEFAULT_VERIFY_BEFORE_SERVE,
};
pub use tail::{Tail, TailReader};
pub use write::Writer;
