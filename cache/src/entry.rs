//! A committed entry: a key, what is stored beside its body, and the
//! body's content address.

use cacache::Integrity;

use crate::key::CacheKey;
use crate::meta::Meta;

/// A committed entry, as returned by a lookup.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its key.
    pub key: CacheKey,
    /// Its metadata (status, headers, policy, size, integrity…).
    pub meta: Meta,
    /// Where its body is stored (its SHA-256).
    pub(crate) integrity: Integrity,
}

impl Entry {
    /// Body size in bytes.
    pub fn size(&self) -> u64 {
        self.meta.size
    }
}
