//! Size limit, LRU eviction, verify, gc, purge and stats.

mod support;

use std::time::Duration;

use cistern_cache::{Lookup, NoStoreReason, StoreConfig, StoreStart};
use support::*;

fn deb(i: usize) -> String {
    format!("https://deb.example.test/debian/pool/main/p/p{i}_1.0_amd64.deb")
}

/// Stores `deb(i)` for each `i`, 10 kB each.
async fn store_debs(cache: &cistern_cache::Cache, debs: std::ops::Range<usize>) {
    for i in debs {
        origin_answer(
            cache,
            &get(&deb(i)),
            &ok(&[]),
            &body_of(10_000, i as u8),
            t(0),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn lru_eviction_keeps_the_size_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_bytes: Some(50_000),
        ..StoreConfig::default()
    };
    let cache = cache_with(dir.path(), cfg, Default::default()).await;
    store_debs(&cache, 0..4).await;
    // Use entry 0 so it is the most recently used.
    assert!(matches!(
        cache.lookup(&get(&deb(0)), t(1)).await.unwrap(),
        Lookup::Hit(_)
    ));
    store_debs(&cache, 4..8).await;

    let stats = cache.store().stats();
    assert!(stats.bytes <= 50_000, "{stats:?}");
    assert_eq!(stats.entries, 5);
    assert_eq!(stats.evictions, 3);
    let on_disk: u64 = content_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        on_disk <= 50_000,
        "evicted content is deleted, {on_disk} bytes left"
    );
    assert!(matches!(
        cache.lookup(&get(&deb(0)), t(2)).await.unwrap(),
        Lookup::Hit(_)
    ));
    for i in 1..4 {
        assert!(
            matches!(
                cache.lookup(&get(&deb(i)), t(2)).await.unwrap(),
                Lookup::Miss(_)
            ),
            "{i}"
        );
    }
}

#[tokio::test]
async fn content_shared_by_another_key_survives_eviction_of_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(1000, 1);
    origin_answer(&cache, &get(&deb(1)), &ok(&[]), &body, t(0))
        .await
        .unwrap();
    origin_answer(&cache, &get(&deb(2)), &ok(&[]), &body, t(0))
        .await
        .unwrap();
    cache.store().purge(&deb(1)).await.unwrap();
    assert_eq!(content_files(dir.path()).len(), 1);
    let Lookup::Hit(hit) = cache.lookup(&get(&deb(2)), t(1)).await.unwrap() else {
        panic!("shared content kept");
    };
    assert_eq!(hit.body.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn verify_drops_corrupt_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    origin_answer(&cache, &get(&deb(1)), &ok(&[]), &body_of(5000, 1), t(0))
        .await
        .unwrap();
    let report = cache.store().verify().await.unwrap();
    assert_eq!((report.checked, report.dropped.len()), (1, 0));
    corrupt_all_content(dir.path());
    let report = cache.store().verify().await.unwrap();
    assert_eq!(report.dropped, vec![format!("GET {}", deb(1))]);
    assert_eq!(cache.store().stats().entries, 0);
}

#[tokio::test]
async fn gc_removes_unreferenced_content_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    origin_answer(&cache, &get(&deb(1)), &ok(&[]), &body_of(5000, 1), t(0))
        .await
        .unwrap();
    // Content with no index entry, as a crash between the two would leave.
    cacache::write_hash(dir.path(), b"orphaned content")
        .await
        .unwrap();
    assert_eq!(content_files(dir.path()).len(), 2);

    let report = cache.store().gc_older_than(Duration::ZERO).await.unwrap();
    assert_eq!(report.removed_files, 1);
    assert_eq!(report.freed_bytes, 16);
    assert!(matches!(
        cache.lookup(&get(&deb(1)), t(1)).await.unwrap(),
        Lookup::Hit(_)
    ));
}

#[tokio::test]
async fn purge_removes_matching_urls() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    origin_answer(&cache, &get(&deb(1)), &ok(&[]), b"a", t(0))
        .await
        .unwrap();
    origin_answer(&cache, &get(&deb(2)), &ok(&[]), b"b", t(0))
        .await
        .unwrap();
    let other = "https://py.example.test/packages/aa/bb/x-1.0-py3-none-any.whl";
    origin_answer(&cache, &get(other), &ok(&[]), b"c", t(0))
        .await
        .unwrap();

    assert_eq!(
        cache
            .store()
            .purge("https://deb.example.test/**")
            .await
            .unwrap(),
        2
    );
    assert_eq!(cache.store().stats().entries, 1);
    assert!(matches!(
        cache.lookup(&get(other), t(1)).await.unwrap(),
        Lookup::Hit(_)
    ));
}

#[tokio::test]
async fn stats_count_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let post = http::Request::post(deb(1)).body(()).unwrap().into_parts().0;
    cache.lookup(&post, t(0)).await.unwrap();
    cache.lookup(&get(&deb(1)), t(0)).await.unwrap();
    origin_answer(&cache, &get(&deb(1)), &ok(&[]), b"a", t(0))
        .await
        .unwrap();
    cache.lookup(&get(&deb(1)), t(1)).await.unwrap();
    let s = cache.store().stats();
    assert_eq!((s.bypasses, s.misses, s.hits, s.writes), (1, 1, 1, 1));
    assert_eq!((s.entries, s.bytes), (1, 1));
}

/// One download larger than `max_object` is passed through: it neither
/// evicts the files every job uses nor is stored itself. Known from its
/// `Content-Length` before anything is written; without one, the write is
/// aborted once the body grows past the limit.
#[tokio::test]
async fn a_body_larger_than_max_object_is_not_stored_and_evicts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_bytes: Some(50_000),
        max_object: Some(20_000),
        ..StoreConfig::default()
    };
    let cache = cache_with(dir.path(), cfg, Default::default()).await;
    store_debs(&cache, 0..4).await;
    let before = cache.store().stats();
    assert_eq!((before.entries, before.bytes), (4, 40_000));

    // Announced too large: not even a write.
    let big = deb(10);
    let announced = ok(&[("content-length", "60000")]);
    match cache
        .store_response(&get(&big), &announced, t(1))
        .await
        .unwrap()
    {
        StoreStart::NoStore(reason) => assert_eq!(reason, NoStoreReason::TooLarge),
        StoreStart::Store(_) => panic!("a 60 kB body was going to be stored"),
    }

    // No length: the write stops at the limit, and nothing is committed.
    let StoreStart::Store(mut writer) = cache
        .store_response(&get(&deb(11)), &ok(&[]), t(1))
        .await
        .unwrap()
    else {
        panic!("a body of unknown length starts a write");
    };
    let chunk = body_of(8_000, 9);
    writer.write(&chunk).await.unwrap();
    writer.write(&chunk).await.unwrap();
    let err = writer.write(&chunk).await.unwrap_err();
    assert!(
        matches!(err, cistern_cache::Error::TooLarge { limit: 20_000 }),
        "{err}"
    );
    assert!(
        writer.commit().await.is_err(),
        "an aborted write never commits"
    );

    let after = cache.store().stats();
    assert_eq!((after.entries, after.bytes), (4, 40_000), "nothing evicted");
    for i in 0..4 {
        assert!(matches!(
            cache.lookup(&get(&deb(i)), t(2)).await.unwrap(),
            Lookup::Hit(_)
        ));
    }
    assert!(matches!(
        cache.lookup(&get(&deb(11)), t(2)).await.unwrap(),
        Lookup::Miss(_)
    ));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "no temp file left"
    );
}
