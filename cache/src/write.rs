//! Streaming writes of origin bodies into the store.
//!
//! The proxy tees the origin body: each chunk goes to the client and to
//! [`Writer::write`]. Only [`Writer::commit`] makes the entry visible, after
//! checking the length against `Content-Length` (when the origin sent one)
//! and after cacache has hashed the bytes and moved them into place. A writer
//! dropped without commit — origin error, client gone, cut-short body — is
//! aborted: cacache deletes its temp file and the index never hears of it.
//!
//! Any I/O error (including a full disk, [`Error::DiskFull`]) aborts the
//! write on the spot; later calls return [`Error::WriteAborted`]. The proxy
//! keeps streaming to the client from origin and logs; reads are unaffected.

use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::meta::Meta;
use crate::store::{Entry, Store};

/// An open body write. See the module docs.
pub struct Writer {
    store: Store,
    key: CacheKey,
    meta: Meta,
    expected: Option<u64>,
    written: u64,
    inner: Option<cacache::Writer>,
    check: Box<xxhash_rust::xxh3::Xxh3>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("key", &self.key)
            .field("written", &self.written)
            .field("expected", &self.expected)
            .field("open", &self.inner.is_some())
            .finish()
    }
}

impl Writer {
    pub(crate) async fn open(
        store: Store,
        key: CacheKey,
        meta: Meta,
        expected: Option<u64>,
    ) -> Result<Self> {
        let inner = cacache::WriteOpts::new()
            .algorithm(cacache::Algorithm::Sha256)
            .open_hash(store.dir())
            .await
            .map_err(|e| Error::cacache("starting a body write", e))?;
        Ok(Writer {
            store,
            key,
            meta,
            expected,
            written: 0,
            inner: Some(inner),
            check: Box::default(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk of the body. On error the write is aborted.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(Error::WriteAborted {
                key: self.key.to_string(),
            });
        };
        if let Err(e) = inner.write_all(chunk).await {
            self.abort();
            return Err(Error::io("writing a body", e));
        }
        self.check.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Makes the entry visible, replacing any previous entry for the key.
    pub async fn commit(mut self) -> Result<Entry> {
        let Some(inner) = self.inner.take() else {
            return Err(Error::WriteAborted {
                key: self.key.to_string(),
            });
        };
        if let Some(expected) = self.expected {
            if expected != self.written {
                self.count_abort();
                return Err(Error::LengthMismatch {
                    expected,
                    actual: self.written,
                });
            }
        }
        let integrity = match inner.commit().await {
            Ok(sri) => sri,
            Err(e) => {
                self.count_abort();
                return Err(Error::cacache("committing a body", e));
            }
        };
        let mut meta = self.meta.clone();
        meta.size = self.written;
        meta.integrity = integrity.to_string();
        meta.check = Some(crate::read::xxh3_check(self.check.digest128()));
        if let Err(e) = self.store.index_insert(&self.key, &integrity, &meta).await {
            self.count_abort();
            self.store
                .remove_content_if_unreferenced(&meta.integrity)
                .await;
            return Err(e);
        }
        self.store.mark_verified(&integrity, true);
        self.store.counters().writes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %self.key, size = self.written, "cache entry committed");
        if let Err(e) = self.store.evict_if_needed().await {
            tracing::warn!(error = %e, "cache eviction failed");
        }
        Ok(Entry {
            key: self.key.clone(),
            meta,
            integrity,
        })
    }

    fn abort(&mut self) {
        if self.inner.take().is_some() {
            self.count_abort();
        }
    }

    fn count_abort(&self) {
        self.store
            .counters()
            .aborted_writes
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %self.key, written = self.written, "cache write aborted");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Dropping cacache's writer deletes its temp file; nothing was
        // indexed.
        self.abort();
    }
}
