//! Maintenance: verification, garbage collection and purge.
//!
//! All of these run while the store serves requests: the LRU table lock is
//! held only to choose what to remove, never across disk I/O. They are the
//! library side of the CLI's `cache stats|verify|gc|purge` commands.
//! Eviction for space is the store's own, after every commit (`store.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cacache::Integrity;

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::layout::content_path;
use crate::pattern::Glob;
use crate::store::Store;

/// Files younger than this are left alone by [`Store::gc`]: they may belong
/// to a write that is between moving its content into place and indexing it.
const GC_GRACE: Duration = Duration::from_secs(600);

/// Result of [`Store::verify`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: u64,
    /// Keys dropped because their content failed.
    pub dropped: Vec<String>,
}

/// Result of [`Store::gc`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced content and stale temp files removed.
    pub removed_files: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl Store {
    /// Reads every entry whole and checks it against its hash; entries that
    /// fail (or whose content is gone) are dropped.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let keys = self.table().keys();
        for (key, _) in keys {
            let Some(key) = CacheKey::parse(&key) else {
                continue;
            };
            let Some(entry) = self.peek(&key).await? else {
                continue;
            };
            report.checked += 1;
            match self.check_entry(&entry).await {
                Ok(()) => {}
                Err(e) if e.is_corrupt() => report.dropped.push(key.to_string()),
                Err(e) => return Err(e),
            }
        }
        if !report.dropped.is_empty() {
            self.note_change().await;
        }
        Ok(report)
    }

    async fn check_entry(&self, entry: &Entry) -> Result<()> {
        let mut reader = self.reader(entry).await?;
        while reader.chunk().await?.is_some() {}
        Ok(())
    }

    /// Like `get`, without marking the entry used.
    async fn peek(&self, key: &CacheKey) -> Result<Option<Entry>> {
        let found = cacache::index::find_async(self.dir(), key.as_str())
            .await
            .map_err(|e| Error::cacache("reading the index", e))?;
        let Some(found) = found else {
            return Ok(None);
        };
        match serde_json::from_value(found.metadata) {
            Ok(meta) => Ok(Some(Entry {
                key: key.clone(),
                meta,
                integrity: found.integrity,
            })),
            Err(_) => {
                self.remove(key).await?;
                Ok(None)
            }
        }
    }

    /// Removes content no index entry references, and temp files left by
    /// crashed writes; both only when older than a grace period, so
    /// in-progress writes are safe. Reloads the index first, so entries
    /// written by other processes are kept.
    pub async fn gc(&self) -> Result<GcReport> {
        self.gc_older_than(GC_GRACE).await
    }

    /// [`Store::gc`] with an explicit grace period.
    pub async fn gc_older_than(&self, grace: Duration) -> Result<GcReport> {
        self.reload().await?;
        let referenced: HashSet<PathBuf> = self
            .table()
            .integrities()
            .iter()
            .filter_map(|i| i.parse::<Integrity>().ok())
            .map(|sri| content_path(self.dir(), &sri))
            .collect();
        let dir = self.dir().to_path_buf();
        let report = tokio::task::spawn_blocking(move || sweep(&dir, &referenced, grace))
            .await
            .map_err(|e| Error::io("collecting garbage", std::io::Error::other(e)))??;
        self.flush().await?;
        Ok(report)
    }

    /// Removes every entry whose URL (`https://host/path?query`) matches the
    /// glob, e.g. `https://deb.example.test/**`. Returns the number removed.
    pub async fn purge(&self, pattern: &str) -> Result<u64> {
        let glob = Glob::new(pattern);
        let mut removed = 0;
        let keys = self.table().keys();
        for (key, _) in keys {
            let Some(parsed) = CacheKey::parse(&key) else {
                continue;
            };
            if glob.matches(parsed.url()) {
                self.remove(&parsed).await?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.note_change().await;
        }
        Ok(removed)
    }
}

fn sweep(dir: &Path, referenced: &HashSet<PathBuf>, grace: Duration) -> Result<GcReport> {
    let mut report = GcReport::default();
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut stack = vec![dir.join("content-v2"), dir.join("tmp")];
    while let Some(current) = stack.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("listing cache content", e)),
        };
        for item in entries {
            let item = item.map_err(|e| Error::io("listing cache content", e))?;
            let path = item.path();
            let meta = item
                .metadata()
                .map_err(|e| Error::io("listing cache content", e))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let old = meta.modified().map_or(true, |m| m <= cutoff);
            if old && !referenced.contains(&path) && std::fs::remove_file(&path).is_ok() {
                report.removed_files += 1;
                report.freed_bytes += meta.len();
            }
        }
    }
    Ok(report)
}
