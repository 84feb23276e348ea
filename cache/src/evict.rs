//! Least-recently-used bookkeeping and the eviction choice.
//!
//! The store keeps this table in memory: every indexed key with its content
//! integrity, size and last access. Content is shared between keys (it is
//! addressed by hash), so the table also counts references per integrity;
//! the cache's size is the sum of *distinct* content sizes, and content is
//! removed only when its last referencing key goes.
//!
//! Last access lives here rather than in cacache's index, because the index
//! is append-only: recording every hit there would grow it without bound.
//! It is persisted to `cistern-lru.json` by `Store::flush` (and by each
//! eviction and gc), and rebuilt from the index's stored times when absent.
//!
//! Nothing here does I/O: [`LruTable::evict_until`] picks victims and
//! updates the accounting; the store then deletes them without holding the
//! table lock, so lookups and writes go on during eviction.

use std::collections::{BTreeMap, HashMap};

/// One indexed key.
#[derive(Debug, Clone)]
struct Tracked {
    integrity: String,
    last_access_ms: u64,
    /// Tie-breaker for accesses within the same millisecond.
    seq: u64,
}

/// Keys, their content, and when each was last used.
#[derive(Debug, Default)]
pub(crate) struct LruTable {
    entries: HashMap<String, Tracked>,
    /// integrity → (referencing keys, content size)
    content: HashMap<String, (u32, u64)>,
    /// Keys by (last access, seq), least recent first: eviction takes from
    /// the front without sorting the table (seq makes each position unique).
    order: BTreeMap<(u64, u64), String>,
    bytes: u64,
    seq: u64,
}

/// A key chosen for eviction, and its content if no other key uses it.
#[derive(Debug)]
pub(crate) struct Victim {
    pub(crate) key: String,
    pub(crate) orphaned_integrity: Option<String>,
}

impl LruTable {
    /// Records a key (new or replaced). Returns the integrity it pointed at
    /// before if that content is now unreferenced.
    pub(crate) fn insert(
        &mut self,
        key: &str,
        integrity: &str,
        size: u64,
        now_ms: u64,
    ) -> Option<String> {
        let orphan = self.remove(key);
        self.seq += 1;
        self.order.insert((now_ms, self.seq), key.to_owned());
        self.entries.insert(
            key.to_owned(),
            Tracked {
                integrity: integrity.to_owned(),
                last_access_ms: now_ms,
                seq: self.seq,
            },
        );
        let slot = self
            .content
            .entry(integrity.to_owned())
            .or_insert((0, size));
        if slot.0 == 0 {
            self.bytes += size;
        }
        slot.0 += 1;
        orphan.filter(|old| old != integrity)
    }

    /// Forgets a key. Returns its integrity if no other key references it.
    pub(crate) fn remove(&mut self, key: &str) -> Option<String> {
        let tracked = self.entries.remove(key)?;
        self.order.remove(&(tracked.last_access_ms, tracked.seq));
        let slot = self.content.get_mut(&tracked.integrity)?;
        slot.0 -= 1;
        if slot.0 == 0 {
            self.bytes -= slot.1;
            self.content.remove(&tracked.integrity);
            Some(tracked.integrity)
        } else {
            None
        }
    }

    /// Marks a key as just used.
    pub(crate) fn touch(&mut self, key: &str, now_ms: u64) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(t) = self.entries.get_mut(key) {
            let name = self
                .order
                .remove(&(t.last_access_ms, t.seq))
                .unwrap_or_else(|| key.to_owned());
            t.last_access_ms = t.last_access_ms.max(now_ms);
            t.seq = seq;
            self.order.insert((t.last_access_ms, seq), name);
        }
    }

    /// Whether a key is tracked.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether any key references this content.
    pub(crate) fn references(&self, integrity: &str) -> bool {
        self.content.contains_key(integrity)
    }

    /// Distinct content bytes referenced by the index.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// All keys with their integrity.
    pub(crate) fn keys(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(k, t)| (k.clone(), t.integrity.clone()))
            .collect()
    }

    /// All integrities referenced.
    pub(crate) fn integrities(&self) -> Vec<String> {
        self.content.keys().cloned().collect()
    }

    /// Last-access times, for persisting.
    pub(crate) fn access_times(&self) -> HashMap<String, u64> {
        self.entries
            .iter()
            .map(|(k, t)| (k.clone(), t.last_access_ms))
            .collect()
    }

    /// Removes least-recently-used keys until the distinct content size is
    /// at most `limit`, returning what the caller must delete.
    pub(crate) fn evict_until(&mut self, limit: u64) -> Vec<Victim> {
        let mut victims = Vec::new();
        while self.bytes > limit {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            let orphaned_integrity = self.remove(&key);
            victims.push(Victim {
                key,
                orphaned_integrity,
            });
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_content_is_counted_once_and_freed_with_its_last_key() {
        let mut t = LruTable::default();
        t.insert("a", "sha256-x", 10, 1);
        t.insert("b", "sha256-x", 10, 2);
        assert_eq!(t.bytes(), 10);
        assert_eq!(t.remove("a"), None);
        assert_eq!(t.remove("b").as_deref(), Some("sha256-x"));
        assert_eq!(t.bytes(), 0);
    }

    #[test]
    fn replacing_a_key_orphans_its_old_content() {
        let mut t = LruTable::default();
        t.insert("a", "sha256-old", 10, 1);
        assert_eq!(
            t.insert("a", "sha256-new", 5, 2).as_deref(),
            Some("sha256-old")
        );
        assert_eq!(t.bytes(), 5);
        assert_eq!(t.insert("a", "sha256-new", 5, 3), None);
    }

    #[test]
    fn eviction_takes_least_recently_used_first() {
        let mut t = LruTable::default();
        t.insert("old", "sha256-1", 10, 1);
        t.insert("mid", "sha256-2", 10, 2);
        t.insert("new", "sha256-3", 10, 3);
        t.touch("old", 4);
        let victims = t.evict_until(20);
        assert_eq!(victims.len(), 1);
        assert_eq!(victims[0].key, "mid");
        assert_eq!(t.bytes(), 20);
        assert!(t.contains("old"));
        // The order follows every change: replaced and removed keys too.
        t.insert("mid", "sha256-4", 10, 5);
        t.remove("new");
        t.insert("newest", "sha256-5", 10, 6);
        let order: Vec<&str> = t.order.values().map(String::as_str).collect();
        assert_eq!(order, ["old", "mid", "newest"]);
        assert_eq!(t.order.len(), t.len());
        let victims = t.evict_until(10);
        let keys: Vec<&str> = victims.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["old", "mid"]);
    }
}
