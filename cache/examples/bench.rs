//! Streaming-hit throughput: reads a large cached body through the store's
//! verifying streaming reader, and the same bytes from a plain file with
//! the same chunk size, and prints MB/s for both and their ratio.
//!
//! `cargo run --release -p cistern-cache --example bench [size_mib]`

use std::time::{Instant, SystemTime};

use cistern_cache::{Body, Cache, Lookup, Policy, Store, StoreConfig, StoreStart};
use http::{Request, Response};
use tokio::io::AsyncReadExt;

const CHUNK: usize = 256 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let size = mib * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        verify_before_serve: 0,
        ..StoreConfig::default()
    };
    let cache = Cache::new(
        Store::open(dir.path().join("cache"), config).await?,
        Policy::default(),
    );
    let uri = "https://deb.example.test/debian/pool/main/b/big/big_1.0_amd64.deb";
    let req = Request::get(uri).body(())?.into_parts().0;
    let res = Response::new(()).into_parts().0;
    let now = SystemTime::now();

    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 3) as u8).collect();
    let StoreStart::Store(mut writer) = cache.store_response(&req, &res, now).await? else {
        return Err("not stored".into());
    };
    let plain = dir.path().join("plain.bin");
    let mut plain_bytes = Vec::with_capacity(size);
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK);
        writer.write(&chunk[..n]).await?;
        plain_bytes.extend_from_slice(&chunk[..n]);
        left -= n;
    }
    writer.commit().await?;
    tokio::fs::write(&plain, &plain_bytes).await?;
    drop(plain_bytes);

    // Warm the page cache for both, so the comparison is of the read paths.
    let _ = cache_read(&cache, &req, now).await?;
    let _ = file_read(&plain).await?;

    let mut cache_rates = Vec::new();
    let mut file_rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let n = cache_read(&cache, &req, now).await?;
        cache_rates.push(n as f64 / start.elapsed().as_secs_f64() / 1e6);
        let start = Instant::now();
        let n = file_read(&plain).await?;
        file_rates.push(n as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (c, f) = (best(&cache_rates), best(&file_rates));
    println!("body size:          {mib} MiB");
    println!("cache streaming hit: {c:8.0} MB/s (sha256-verified)");
    println!("plain file read:     {f:8.0} MB/s");
    println!("ratio cache/file:    {:.2}", c / f);
    Ok(())
}

async fn cache_read(
    cache: &Cache,
    req: &http::request::Parts,
    now: SystemTime,
) -> Result<usize, Box<dyn std::error::Error>> {
    let Lookup::Hit(hit) = cache.lookup(req, now).await? else {
        return Err("expected a hit".into());
    };
    let Body::Stream(mut reader) = hit.body else {
        return Err("expected a streaming body".into());
    };
    let mut total = 0;
    while let Some(chunk) = reader.chunk().await? {
        total += chunk.len();
    }
    Ok(total)
}

async fn file_read(path: &std::path::Path) -> Result<usize, Box<dyn std::error::Error>> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = bytes::BytesMut::with_capacity(CHUNK);
    let mut total = 0;
    loop {
        buf.clear();
        buf.reserve(CHUNK);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}
