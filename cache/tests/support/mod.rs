//! Shared helpers: a cache in a tempdir, request/response builders, and a
//! fake "origin fetch" that stores a body the way the proxy would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cistern_cache::{Cache, Entry, Policy, PolicyConfig, Store, StoreConfig, StoreStart};
use http::{request, response, Request, Response, StatusCode};

/// A fixed "now" so tests never depend on the clock.
pub const T0: Duration = Duration::from_secs(1_700_000_000);

pub fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
}

pub async fn cache_in(dir: &Path) -> Cache {
    cache_with(dir, StoreConfig::default(), PolicyConfig::default()).await
}

pub async fn cache_with(dir: &Path, store: StoreConfig, policy: PolicyConfig) -> Cache {
    let store = Store::open(dir, store).await.expect("open store");
    Cache::new(store, Policy::new(policy))
}

pub fn get(uri: &str) -> request::Parts {
    Request::get(uri).body(()).unwrap().into_parts().0
}

pub fn get_with(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub fn ok(headers: &[(&str, &str)]) -> response::Parts {
    status(StatusCode::OK, headers)
}

pub fn status(code: StatusCode, headers: &[(&str, &str)]) -> response::Parts {
    let mut b = Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// What the proxy does on a miss: decide, tee the body into a writer in
/// chunks, commit. Returns the committed entry, or `None` if not stored.
pub async fn origin_answer(
    cache: &Cache,
    req: &request::Parts,
    res: &response::Parts,
    body: &[u8],
    now: SystemTime,
) -> Option<Entry> {
    match cache
        .store_response(req, res, now)
        .await
        .expect("store_response")
    {
        StoreStart::Store(mut writer) => {
            for chunk in body.chunks(7919) {
                writer.write(chunk).await.expect("write");
            }
            Some(writer.commit().await.expect("commit"))
        }
        StoreStart::NoStore(_) => None,
    }
}

/// Every content file under the cache directory.
pub fn content_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("content-v2")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Flips one byte of every content file in place, as bit rot would.
pub fn corrupt_all_content(dir: &Path) {
    for path in content_files(dir) {
        flip_byte_in_place(&path, std::fs::metadata(&path).unwrap().len() / 2, 0x01);
    }
}

/// XORs the byte at `offset` of the file with `mask`, without truncating
/// the file (a running reader may have it mapped).
pub fn flip_byte_in_place(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ mask], offset).unwrap();
}

/// A deterministic body of `len` bytes.
pub fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
