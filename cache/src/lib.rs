//! `cistern-cache`: the store and caching policy behind cistern's
//! transparent package-repository proxy.
//!
//! What lives where:
//! - [`key`]: request → cache key (method + normalised URL);
//! - [`meta`]: what is stored with each entry (status, headers, policy…);
//! - [`rules`]: per-domain/path modes and the package-repository defaults;
//! - [`policy`]: I/O-free decisions on top of http-cache-semantics;
//! - [`reason`]: why a request bypassed, missed or was not stored;
//! - [`store`]: the cacache-backed, content-addressed store, with verified
//!   hot bodies kept in memory (`hot.rs`);
//! - [`write`](mod@write) / [`read`]: streaming writes and verified streaming reads
//!   (large ones from memory maps, `map.rs`: the crate's only `unsafe`);
//! - [`lock`]: single-flight for concurrent misses, whose followers read
//!   the download in flight through [`tail`];
//! - [`conditional`]: client `If-None-Match`/`If-Modified-Since`/`Range`;
//! - `evict.rs` / [`maintain`]: LRU size limit, verify, gc, purge, stats;
//! - [`cache`]: the state machine the proxy drives (`Cache::lookup` …).
//!
//! It is not an HTTP client or server: the proxy does the network I/O and
//! calls in here at each step (see [`cache`] for the flow).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod conditional;
pub mod error;
mod evict;
mod hot;
pub mod key;
pub mod lock;
pub mod maintain;
mod map;
pub mod meta;
pub mod pattern;
pub mod policy;
pub mod read;
pub mod reason;
pub mod rules;
pub mod store;
pub mod tail;
pub mod write;

pub use cache::{Cache, Hit, Lookup, Miss, Revalidation, Stale, StoreStart};
pub use conditional::{
    content_length, content_range, evaluate_conditionals, evaluate_range, Conditional,
    RangeDecision,
};
pub use error::{Error, Result};
pub use key::CacheKey;
pub use lock::{Flight, FlightGuard, FlightWaiter, Following, WaitOutcome};
pub use maintain::{GcReport, VerifyReport};
pub use map::mapped_source;
pub use meta::Meta;
pub use policy::{Policy, PolicyConfig};
pub use read::{Body, BodyReader, RangeReader};
pub use reason::{BypassReason, MissReason, NoStoreReason};
pub use rules::{Mode, RuleConfig, Rules};
pub use store::{
    Entry, SingleFlight, Stats, Store, StoreConfig, DEFAULT_MEMORY_MAX_OBJECT, DEFAULT_MEMORY_SIZE,
    DEFAULT_VERIFY_BEFORE_SERVE,
};
pub use tail::{Tail, TailReader};
pub use write::Writer;
