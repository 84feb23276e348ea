//! Ranges and client conditionals answered from a cached entry.

mod support;

use cistern_cache::{
    content_range, evaluate_conditionals, evaluate_range, Conditional, Error, Lookup,
    RangeDecision, Store, StoreConfig,
};
use support::*;

const TGZ: &str = "https://npm.example.test/left-pad/-/left-pad-1.3.0.tgz";

#[tokio::test]
async fn a_range_of_a_cached_entry_returns_exactly_those_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(1_000_000, 8);
    origin_answer(&cache, &get(TGZ), &ok(&[("etag", "\"t1\"")]), &body, t(0))
        .await
        .unwrap();

    let req = get_with(TGZ, &[("range", "bytes=999000-")]);
    let Lookup::Hit(hit) = cache.lookup(&req, t(1)).await.unwrap() else {
        panic!("should hit");
    };
    let size = hit.entry.size();
    let decision = evaluate_range(&req.headers, &hit.response.headers, size);
    assert_eq!(
        decision,
        RangeDecision::Partial {
            start: 999_000,
            end: 999_999
        }
    );
    assert_eq!(
        content_range(decision, size).unwrap(),
        "bytes 999000-999999/1000000"
    );
    let RangeDecision::Partial { start, end } = decision else {
        unreachable!()
    };
    let bytes = cache
        .store()
        .range(&hit.entry, start, end)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, &body[999_000..]);

    let middle = cache
        .store()
        .range(&hit.entry, 10, 19)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(middle, &body[10..20]);
    assert!(matches!(
        cache.store().range(&hit.entry, 0, size).await.unwrap_err(),
        Error::RangeNotSatisfiable { .. }
    ));
}

#[tokio::test]
async fn a_range_after_restart_checks_the_content_it_touches() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = cache_in(dir.path()).await;
        origin_answer(&cache, &get(TGZ), &ok(&[]), &body_of(100_000, 1), t(0))
            .await
            .unwrap();
    }
    corrupt_all_content(dir.path());
    let store = Store::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
    let entry = store.get(&key).await.unwrap().unwrap();
    let err = match store.range(&entry, 0, 9).await {
        Ok(range) => range.bytes().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.is_corrupt(), "{err}");
    assert!(store.get(&key).await.unwrap().is_none(), "dropped");
}

#[tokio::test]
async fn client_conditionals_are_answered_from_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let res = ok(&[
        ("etag", "\"t1\""),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]);
    origin_answer(&cache, &get(TGZ), &res, b"tarball", t(0))
        .await
        .unwrap();

    let inm = get_with(TGZ, &[("if-none-match", "\"t1\"")]);
    let Lookup::Hit(hit) = cache.lookup(&inm, t(1)).await.unwrap() else {
        panic!("client conditionals do not stop a hit");
    };
    assert_eq!(
        evaluate_conditionals(&inm.headers, &hit.response.headers),
        Conditional::NotModified
    );
    let other = get_with(TGZ, &[("if-none-match", "\"t0\"")]);
    assert_eq!(
        evaluate_conditionals(&other.headers, &hit.response.headers),
        Conditional::Proceed
    );
    let ims = get_with(
        TGZ,
        &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    );
    assert_eq!(
        evaluate_conditionals(&ims.headers, &hit.response.headers),
        Conditional::NotModified
    );
}

/// Flips the byte at `offset` of every content file, in place.
fn corrupt_at(dir: &std::path::Path, offset: usize) {
    for path in content_files(dir) {
        flip_byte_in_place(&path, offset as u64, 0x01);
    }
}

const BLOCK: usize = 256 * 1024;

#[tokio::test]
async fn ranges_and_streams_check_each_block_and_never_hand_out_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(4 * BLOCK + 1000, 9);
    origin_answer(&cache, &get(TGZ), &ok(&[]), &body, t(0))
        .await
        .unwrap();
    corrupt_at(dir.path(), 3 * BLOCK + 10);
    let store = Store::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
    let entry = store.get(&key).await.unwrap().unwrap();

    // A range within intact blocks is served: those blocks check out.
    let head = store
        .range(&entry, 100, BLOCK as u64 + 99)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(head, &body[100..BLOCK + 100]);

    // A stream hands out the blocks before the corrupt one, then fails.
    let mut reader = store.reader(&entry).await.unwrap();
    let mut streamed = Vec::new();
    let err = loop {
        match reader.chunk().await {
            Ok(Some(chunk)) => streamed.extend_from_slice(&chunk),
            Ok(None) => panic!("a corrupt body must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(err.is_corrupt(), "{err}");
    assert_eq!(
        streamed,
        &body[..3 * BLOCK],
        "only checked blocks were handed out"
    );
    assert!(store.get(&key).await.unwrap().is_none(), "dropped");
}

#[tokio::test]
async fn a_range_touching_a_corrupt_block_fails_and_drops_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(2 * BLOCK + 5, 10);
    origin_answer(&cache, &get(TGZ), &ok(&[]), &body, t(0))
        .await
        .unwrap();
    corrupt_at(dir.path(), 2 * BLOCK + 1);
    let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
    let entry = cache.store().get(&key).await.unwrap().unwrap();
    let mut range = cache
        .store()
        .range(&entry, BLOCK as u64 - 10, 2 * BLOCK as u64 + 2)
        .await
        .unwrap();
    let first = range.chunk().await.unwrap().unwrap();
    assert_eq!(first, &body[BLOCK - 10..BLOCK]);
    let second = range.chunk().await.unwrap().unwrap();
    assert_eq!(second, &body[BLOCK..2 * BLOCK]);
    let err = range.chunk().await.unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(cache.store().get(&key).await.unwrap().is_none(), "dropped");
}

/// Stores `body` under TGZ in a fresh store in `dir` (reads mapped or not),
/// lets `damage` change its content file, and streams it back: what was
/// handed out, and how the stream ended.
async fn stream_back(
    dir: &std::path::Path,
    map_reads: bool,
    body: &[u8],
    damage: impl Fn(&std::path::Path),
) -> (Store, Vec<u8>, Result<(), Error>) {
    let config = StoreConfig {
        map_reads,
        memory_size: 0,
        ..StoreConfig::default()
    };
    let cache = cache_with(dir, config.clone(), Default::default()).await;
    origin_answer(&cache, &get(TGZ), &ok(&[]), body, t(0))
        .await
        .unwrap();
    damage(dir);
    let store = Store::open(dir, config).await.unwrap();
    let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
    let entry = store.get(&key).await.unwrap().unwrap();
    let mut streamed = Vec::new();
    let end = match store.reader(&entry).await {
        Err(e) => Err(e),
        Ok(mut reader) => loop {
            match reader.chunk().await {
                Ok(Some(chunk)) => streamed.extend_from_slice(&chunk),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        },
    };
    (store, streamed, end)
}

/// Blocks in one memory-mapped window of a streamed body (`read.rs`).
const WINDOW_BLOCKS: usize = 16;

#[tokio::test]
async fn bodies_spanning_several_windows_stream_whole_mapped_or_read() {
    let body = body_of(2 * WINDOW_BLOCKS * BLOCK + 8 * BLOCK + 777, 11);
    for map_reads in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (_, streamed, end) = stream_back(dir.path(), map_reads, &body, |_| {}).await;
        end.unwrap();
        let first_diff = streamed.iter().zip(body.iter()).position(|(a, b)| a != b);
        assert!(
            streamed == body,
            "map_reads {map_reads}: bytes differ ({} of {}, first at {first_diff:?})",
            streamed.len(),
            body.len()
        );
    }
}

#[tokio::test]
async fn a_corrupt_block_in_a_later_window_ends_the_stream_there() {
    let body = body_of(2 * WINDOW_BLOCKS * BLOCK + 8 * BLOCK + 777, 12);
    let bad_block = WINDOW_BLOCKS + 3;
    for map_reads in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (store, streamed, end) = stream_back(dir.path(), map_reads, &body, |dir| {
            corrupt_at(dir, bad_block * BLOCK + 5)
        })
        .await;
        let err = end.unwrap_err();
        assert!(err.is_corrupt(), "map_reads {map_reads}: {err}");
        assert!(
            streamed == body[..bad_block * BLOCK],
            "map_reads {map_reads}: {} bytes handed out, not the {} before the corrupt block",
            streamed.len(),
            bad_block * BLOCK
        );
        let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
        assert!(store.get(&key).await.unwrap().is_none(), "dropped");
    }
}

#[tokio::test]
async fn a_content_file_cut_short_or_grown_is_a_corrupt_entry() {
    let body = body_of(WINDOW_BLOCKS * BLOCK + 3 * BLOCK + 10, 13);
    let cut = |dir: &std::path::Path| {
        for path in content_files(dir) {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(2 * BLOCK as u64 + 100).unwrap();
        }
    };
    let grow = |dir: &std::path::Path| {
        for path in content_files(dir) {
            let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            std::io::Write::write_all(&mut file, b"appended").unwrap();
        }
    };
    for map_reads in [true, false] {
        for (what, damage) in [
            ("cut short", &cut as &dyn Fn(&std::path::Path)),
            ("grown", &grow),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (store, streamed, end) = stream_back(dir.path(), map_reads, &body, damage).await;
            let err = end.unwrap_err();
            assert!(err.is_corrupt(), "{what}, map_reads {map_reads}: {err}");
            assert!(
                streamed.len() < body.len(),
                "{what}: never handed out whole"
            );
            assert!(
                streamed == body[..streamed.len()],
                "{what}: only stored bytes"
            );
            let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
            assert!(store.get(&key).await.unwrap().is_none(), "{what}: dropped");
        }
    }
}

#[tokio::test]
async fn a_streamed_body_whose_first_block_is_corrupt_is_a_clean_miss() {
    let body = body_of(WINDOW_BLOCKS * BLOCK + 5 * BLOCK, 14);
    for map_reads in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            map_reads,
            memory_size: 0,
            verify_before_serve: 0,
            ..StoreConfig::default()
        };
        let cache = cache_with(dir.path(), config.clone(), Default::default()).await;
        origin_answer(&cache, &get(TGZ), &ok(&[]), &body, t(0))
            .await
            .unwrap();
        corrupt_at(dir.path(), 10);
        let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
        let entry = cache.store().get(&key).await.unwrap().unwrap();
        // Reported when the reader opens, before any response is started.
        let err = cache.store().reader(&entry).await.unwrap_err();
        assert!(err.is_corrupt(), "map_reads {map_reads}: {err}");
        assert!(cache.store().get(&key).await.unwrap().is_none(), "dropped");
    }
}

/// What lets a plain socket send a mapped hit with `sendfile`: each chunk
/// handed out says which content file and offset it was mapped from, and
/// that file holds exactly those bytes there. Chunks read into buffers, and
/// any other bytes, have no source.
#[tokio::test]
async fn chunks_of_a_mapped_body_name_the_file_and_offset_they_were_mapped_from() {
    let body = body_of(2 * WINDOW_BLOCKS * BLOCK + 3 * BLOCK + 99, 15);
    for map_reads in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            map_reads,
            memory_size: 0,
            ..StoreConfig::default()
        };
        let cache = cache_with(dir.path(), config, Default::default()).await;
        origin_answer(&cache, &get(TGZ), &ok(&[]), &body, t(0))
            .await
            .unwrap();
        let key = cistern_cache::CacheKey::from_request(&get(TGZ)).unwrap();
        let entry = cache.store().get(&key).await.unwrap().unwrap();
        let mut reader = cache.store().reader(&entry).await.unwrap();
        let mut at = 0usize;
        let mut chunks = Vec::new();
        while let Some(chunk) = reader.chunk().await.unwrap() {
            let source = cistern_cache::mapped_source(&chunk);
            match (map_reads, source) {
                (true, Some((file, offset))) => {
                    assert_eq!(offset, at as u64, "offset of the chunk at {at}");
                    let mut on_disk = vec![0u8; chunk.len()];
                    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut on_disk, offset)
                        .unwrap();
                    assert!(on_disk == chunk, "the file holds the chunk at {at}");
                    // A slice within it, too.
                    let inner = chunk.slice(10..20);
                    let (_, inner_offset) = cistern_cache::mapped_source(&inner).unwrap();
                    assert_eq!(inner_offset, offset + 10);
                }
                (true, None) => panic!("mapped chunk at {at} has no source"),
                (false, Some(_)) => panic!("read chunk at {at} claims a mapped source"),
                (false, None) => {}
            }
            assert!(chunk == body[at..at + chunk.len()]);
            at += chunk.len();
            // Kept, so that their windows stay mapped while others are.
            chunks.push(chunk);
        }
        assert_eq!(at, body.len());
        assert!(cistern_cache::mapped_source(&body[..BLOCK]).is_none());
        let copied = chunks[0].to_vec();
        assert!(cistern_cache::mapped_source(&copied).is_none());
    }
}
