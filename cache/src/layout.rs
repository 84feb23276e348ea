//! Where cacache keeps things in the cache directory.
//!
//! cacache's own path helpers are private, yet ranged and mapped reads need
//! a body's file to seek in, and the store stats a key's index bucket to
//! know whether its parsed entry is still current. Tests pin both layouts,
//! so that a cacache upgrade that changes them fails loudly.

use std::path::{Path, PathBuf};

use cacache::Integrity;

/// cacache 13 stores content at
/// `content-v2/<algorithm>/<hex[0..2]>/<hex[2..4]>/<hex[4..]>`.
pub(crate) fn content_path(dir: &Path, integrity: &Integrity) -> PathBuf {
    let (algo, hex) = integrity.to_hex();
    dir.join("content-v2")
        .join(algo.to_string())
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex[4..])
}

/// cacache 13 keeps a key's index entries in
/// `index-v5/<sha1(key)[0..2]>/<[2..4]>/<[4..]>`.
pub(crate) fn bucket_path(dir: &Path, key: &str) -> PathBuf {
    use sha1::Digest;
    let hex = format!("{:x}", sha1::Sha1::digest(key.as_bytes()));
    dir.join("index-v5")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex[4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bucket_path_matches_cacache_layout() {
        let dir = tempfile::tempdir().unwrap();
        cacache::index::insert(dir.path(), "GET https://a.example.test/x", {
            cacache::WriteOpts::new().integrity("sha256-abc".parse().unwrap())
        })
        .unwrap();
        assert!(bucket_path(dir.path(), "GET https://a.example.test/x").is_file());
    }

    #[tokio::test]
    async fn content_path_matches_cacache_layout() {
        let dir = tempfile::tempdir().unwrap();
        let sri = cacache::write_hash(dir.path(), b"layout").await.unwrap();
        let path = content_path(dir.path(), &sri);
        assert_eq!(std::fs::read(path).unwrap(), b"layout");
    }
}
