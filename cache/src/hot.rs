//! Hot bodies: small bodies kept in memory after a verified read from disk.
//!
//! A hit read from disk costs a hand-over to a blocking thread, a copy out
//! of the page cache and a hash of every byte; for a 1 MiB package that is
//! most of the hit. Bodies up to [`StoreConfig::memory_max_object`] that
//! were read whole *and* matched their hashes are kept here, keyed by their
//! content address, so a repeat is sent straight from memory. Content never
//! changes under its address, so an entry needs no invalidation to stay
//! correct; it is dropped when the content leaves the disk cache (eviction,
//! purge, a failed check) only so memory follows the disk.
//!
//! Admission and eviction are quick_cache's S3-FIFO, weighted by body size:
//! a body fetched once and never again (a scan through a repository) does
//! not push out the ones fetched on every job.
//!
//! [`StoreConfig::memory_max_object`]: crate::StoreConfig::memory_max_object

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

/// Weighs a body by its length (at least 1: zero-weight items are never
/// evicted).
#[derive(Debug, Clone, Copy)]
struct ByLength;

impl Weighter<String, Bytes> for ByLength {
    fn weight(&self, _key: &String, body: &Bytes) -> u64 {
        (body.len() as u64).max(1)
    }
}

/// Verified bodies in memory, by content address.
pub(crate) struct HotBodies {
    cache: Option<Cache<String, Bytes, ByLength>>,
    max_object: u64,
}

impl std::fmt::Debug for HotBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotBodies")
            .field("bytes", &self.bytes())
            .field("max_object", &self.max_object)
            .finish()
    }
}

impl HotBodies {
    /// Holds up to `capacity` bytes of bodies of at most `max_object` bytes
    /// each; a capacity of 0 keeps nothing.
    pub(crate) fn new(capacity: u64, max_object: u64) -> HotBodies {
        let max_object = max_object.min(capacity);
        if capacity == 0 || max_object == 0 {
            return HotBodies {
                cache: None,
                max_object: 0,
            };
        }
        // Each shard holds its share of the capacity, and a body heavier
        // than a shard is never admitted: keep room for several of the
        // largest bodies per shard.
        let shards = usize::try_from(capacity / max_object.saturating_mul(8))
            .unwrap_or(usize::MAX)
            .clamp(1, 16);
        let options = OptionsBuilder::new()
            .estimated_items_capacity(
                usize::try_from(capacity / (64 * 1024))
                    .unwrap_or(usize::MAX)
                    .max(16),
            )
            .weight_capacity(capacity)
            .shards(shards)
            .build();
        let Ok(options) = options else {
            return HotBodies {
                cache: None,
                max_object: 0,
            };
        };
        HotBodies {
            cache: Some(Cache::with_options(
                options,
                ByLength,
                DefaultHashBuilder::default(),
                Default::default(),
            )),
            max_object,
        }
    }

    /// Whether a body of `size` bytes may be kept.
    pub(crate) fn admits(&self, size: u64) -> bool {
        self.cache.is_some() && size > 0 && size <= self.max_object
    }

    /// The verified body with this content address, if it is in memory.
    pub(crate) fn get(&self, integrity: &str) -> Option<Bytes> {
        self.cache.as_ref()?.get(integrity)
    }

    /// Keeps a body that was just read whole and matched its hashes.
    pub(crate) fn insert(&self, integrity: String, body: Bytes) {
        if let Some(cache) = &self.cache {
            if self.admits(body.len() as u64) {
                cache.insert(integrity, body);
            }
        }
    }

    /// Forgets a content address (its content left the disk cache).
    pub(crate) fn remove(&self, integrity: &str) {
        if let Some(cache) = &self.cache {
            cache.remove(integrity);
        }
    }

    /// Bytes of bodies held.
    pub(crate) fn bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::weight)
    }

    /// Bodies held.
    pub(crate) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bodies_up_to_the_object_limit_and_within_capacity() {
        let hot = HotBodies::new(1024 * 1024, 64 * 1024);
        assert!(!hot.admits(0));
        assert!(hot.admits(64 * 1024));
        assert!(!hot.admits(64 * 1024 + 1));
        hot.insert("a".into(), Bytes::from(vec![1u8; 64 * 1024]));
        hot.insert("big".into(), Bytes::from(vec![2u8; 64 * 1024 + 1]));
        assert_eq!(hot.get("a").as_deref(), Some(&[1u8; 64 * 1024][..]));
        assert_eq!(hot.get("big"), None);
        for i in 0..64 {
            hot.insert(format!("k{i}"), Bytes::from(vec![0u8; 64 * 1024]));
        }
        assert!(hot.bytes() <= 1024 * 1024, "{} bytes held", hot.bytes());
        hot.remove("k63");
        assert_eq!(hot.get("k63"), None);
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let hot = HotBodies::new(0, 1024);
        assert!(!hot.admits(10));
        hot.insert("a".into(), Bytes::from_static(b"body"));
        assert_eq!(hot.get("a"), None);
        assert_eq!((hot.bytes(), hot.len()), (0, 0));
    }
}
