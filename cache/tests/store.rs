//! The store as the proxy sees it: stored once, hits are byte-identical,
//! corruption is a miss, aborted writes vanish, restarts keep the cache.

mod support;

use cistern_cache::{Lookup, MissReason, Store, StoreConfig};
use support::*;

const DEB_A: &str = "https://deb.example.test/debian/pool/main/h/hello/hello_1.0_amd64.deb";
const DEB_B: &str = "https://mirror.example.test/debian/pool/main/h/hello/hello_1.0_amd64.deb";

#[tokio::test]
async fn identical_bodies_under_two_urls_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(100_000, 1);
    origin_answer(&cache, &get(DEB_A), &ok(&[]), &body, t(0))
        .await
        .unwrap();
    origin_answer(&cache, &get(DEB_B), &ok(&[]), &body, t(0))
        .await
        .unwrap();

    assert_eq!(content_files(dir.path()).len(), 1);
    let stats = cache.store().stats();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.bytes, 100_000);
    for uri in [DEB_A, DEB_B] {
        let Lookup::Hit(hit) = cache.lookup(&get(uri), t(1)).await.unwrap() else {
            panic!("{uri} should hit");
        };
        assert_eq!(hit.body.bytes().await.unwrap(), body);
    }
}

#[tokio::test]
async fn a_hit_returns_identical_bytes_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(12_345, 7);
    let res = ok(&[
        ("content-type", "application/vnd.debian.binary-package"),
        ("content-length", "12345"),
    ]);
    origin_answer(&cache, &get(DEB_A), &res, &body, t(0))
        .await
        .unwrap();

    let Lookup::Hit(hit) = cache.lookup(&get(DEB_A), t(10)).await.unwrap() else {
        panic!("should hit");
    };
    assert_eq!(hit.response.status, 200);
    assert_eq!(
        hit.response.headers["content-type"],
        "application/vnd.debian.binary-package"
    );
    assert_eq!(hit.response.headers["age"], "10");
    assert_eq!(hit.entry.meta.size, 12_345);
    assert!(hit.entry.meta.integrity.starts_with("sha256-"));
    assert_eq!(hit.body.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn a_large_hit_streams_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store_cfg = StoreConfig {
        verify_before_serve: 1024,
        ..StoreConfig::default()
    };
    let cache = cache_with(dir.path(), store_cfg, Default::default()).await;
    let body = body_of(3 * 1024 * 1024 + 5, 3);
    origin_answer(&cache, &get(DEB_A), &ok(&[]), &body, t(0))
        .await
        .unwrap();
    let Lookup::Hit(hit) = cache.lookup(&get(DEB_A), t(1)).await.unwrap() else {
        panic!("should hit");
    };
    assert!(matches!(hit.body, cistern_cache::Body::Stream(_)));
    assert_eq!(hit.body.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn a_corrupted_content_file_is_dropped_and_reported_as_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    origin_answer(&cache, &get(DEB_A), &ok(&[]), &body_of(50_000, 2), t(0))
        .await
        .unwrap();
    corrupt_all_content(dir.path());

    let Lookup::Miss(miss) = cache.lookup(&get(DEB_A), t(1)).await.unwrap() else {
        panic!("corrupt content must not be served");
    };
    assert_eq!(miss.reason, MissReason::Corrupt);
    // Dropped: the next lookup is a plain miss, and it is counted.
    let Lookup::Miss(miss) = cache.lookup(&get(DEB_A), t(2)).await.unwrap() else {
        panic!("still a miss");
    };
    assert_eq!(miss.reason, MissReason::NotCached);
    assert_eq!(cache.store().stats().corrupt, 1);
}

#[tokio::test]
async fn a_corrupted_large_body_fails_at_the_end_of_the_stream_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store_cfg = StoreConfig {
        verify_before_serve: 0,
        ..StoreConfig::default()
    };
    let cache = cache_with(dir.path(), store_cfg, Default::default()).await;
    origin_answer(&cache, &get(DEB_A), &ok(&[]), &body_of(600_000, 4), t(0))
        .await
        .unwrap();
    corrupt_all_content(dir.path());

    let Lookup::Hit(hit) = cache.lookup(&get(DEB_A), t(1)).await.unwrap() else {
        panic!("large bodies stream");
    };
    let err = hit.body.bytes().await.unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    let Lookup::Miss(miss) = cache.lookup(&get(DEB_A), t(2)).await.unwrap() else {
        panic!("dropped entry is a miss");
    };
    assert_eq!(miss.reason, MissReason::NotCached);
}

#[tokio::test]
async fn an_aborted_write_leaves_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let cistern_cache::StoreStart::Store(mut writer) = cache
        .store_response(&get(DEB_A), &ok(&[]), t(0))
        .await
        .unwrap()
    else {
        panic!("should store");
    };
    writer.write(b"half a package").await.unwrap();
    drop(writer);

    assert!(matches!(
        cache.lookup(&get(DEB_A), t(1)).await.unwrap(),
        Lookup::Miss(_)
    ));
    assert_eq!(cache.store().stats().entries, 0);
    assert_eq!(cache.store().stats().aborted_writes, 1);
    let tmp_files = std::fs::read_dir(dir.path().join("tmp")).map_or(0, |d| d.count());
    assert_eq!(tmp_files, 0, "temp file removed on abort");
}

#[tokio::test]
async fn a_body_cut_short_of_its_content_length_is_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let cistern_cache::StoreStart::Store(mut writer) = cache
        .store_response(&get(DEB_A), &ok(&[("content-length", "100")]), t(0))
        .await
        .unwrap()
    else {
        panic!("should store");
    };
    writer.write(&[0u8; 60]).await.unwrap();
    let err = writer.commit().await.unwrap_err();
    assert!(matches!(
        err,
        cistern_cache::Error::LengthMismatch {
            expected: 100,
            actual: 60
        }
    ));
    assert!(matches!(
        cache.lookup(&get(DEB_A), t(1)).await.unwrap(),
        Lookup::Miss(_)
    ));
}

#[tokio::test]
async fn a_new_store_on_the_same_directory_still_hits_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body = body_of(4096, 9);
    {
        let cache = cache_in(dir.path()).await;
        origin_answer(&cache, &get(DEB_A), &ok(&[]), &body, t(0))
            .await
            .unwrap();
        cache.store().flush().await.unwrap();
    }
    let cache = cache_in(dir.path()).await;
    assert_eq!(cache.store().stats().entries, 1);
    assert_eq!(cache.store().stats().bytes, 4096);
    let Lookup::Hit(hit) = cache.lookup(&get(DEB_A), t(60)).await.unwrap() else {
        panic!("should hit after restart");
    };
    assert_eq!(hit.body.bytes().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_do_not_corrupt_the_store() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores on one directory stand in for two processes.
    let a = cache_in(dir.path()).await;
    let b = cache_in(dir.path()).await;
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            // Half the writers race on one shared key with different bodies.
            let uri = if i % 4 == 0 {
                "https://deb.example.test/debian/pool/shared.deb".to_owned()
            } else {
                format!("https://deb.example.test/debian/pool/p{i}.deb")
            };
            let body = body_of(20_000 + usize::from(i) * 100, i);
            origin_answer(&cache, &get(&uri), &ok(&[]), &body, t(0))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store = Store::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.dropped.is_empty(), "{report:?}");
    assert_eq!(report.checked, 31, "30 distinct keys plus the shared one");
}

#[tokio::test]
async fn a_lookup_sees_what_another_process_stored_or_removed_since() {
    let dir = tempfile::tempdir().unwrap();
    let serving = cache_in(dir.path()).await;
    let other = cache_in(dir.path()).await;
    origin_answer(&serving, &get(DEB_A), &ok(&[]), &body_of(4_000, 1), t(0))
        .await
        .unwrap();
    let Lookup::Hit(hit) = serving.lookup(&get(DEB_A), t(1)).await.unwrap() else {
        panic!("should hit");
    };
    assert_eq!(hit.body.bytes().await.unwrap(), body_of(4_000, 1));

    // Another process stores a new version under the same key...
    origin_answer(&other, &get(DEB_A), &ok(&[]), &body_of(4_000, 2), t(2))
        .await
        .unwrap();
    let Lookup::Hit(hit) = serving.lookup(&get(DEB_A), t(3)).await.unwrap() else {
        panic!("should hit");
    };
    assert_eq!(hit.body.bytes().await.unwrap(), body_of(4_000, 2));

    // ...and then removes it.
    let Lookup::Hit(hit) = other.lookup(&get(DEB_A), t(4)).await.unwrap() else {
        panic!("should hit");
    };
    other.store().remove(&hit.entry.key).await.unwrap();
    let Lookup::Miss(miss) = serving.lookup(&get(DEB_A), t(5)).await.unwrap() else {
        panic!("a removed entry is a miss");
    };
    assert_eq!(miss.reason, MissReason::NotCached);
}

#[tokio::test]
async fn a_body_read_from_disk_and_verified_is_then_served_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    // One streamed in blocks (over `verify_before_serve`), one read whole.
    let big = body_of(1024 * 1024 + 3, 11);
    let small = body_of(10_000, 12);
    for (uri, body) in [(DEB_A, &big), (DEB_B, &small)] {
        origin_answer(&cache, &get(uri), &ok(&[]), body, t(0))
            .await
            .unwrap();
    }
    let hit_bytes = |uri: &'static str| {
        let cache = cache.clone();
        async move {
            let Lookup::Hit(hit) = cache.lookup(&get(uri), t(1)).await.unwrap() else {
                panic!("{uri} should hit");
            };
            hit.body.bytes().await.unwrap()
        }
    };
    // The first hits read from disk and keep what matched its hashes.
    assert_eq!(hit_bytes(DEB_A).await, big);
    assert_eq!(hit_bytes(DEB_B).await, small);
    let stats = cache.store().stats();
    assert_eq!(stats.memory_hits, 0);
    assert_eq!(stats.memory_entries, 2);
    assert_eq!(stats.memory_bytes, (big.len() + small.len()) as u64);

    // Repeats come from memory: the disk copy is no longer read, so even a
    // rotted one does not matter until the body leaves memory.
    corrupt_all_content(dir.path());
    assert_eq!(hit_bytes(DEB_A).await, big);
    assert_eq!(hit_bytes(DEB_B).await, small);
    assert_eq!(cache.store().stats().memory_hits, 2);
    assert_eq!(cache.store().stats().corrupt, 0);

    // Ranges too.
    let key = cistern_cache::CacheKey::from_request(&get(DEB_A)).unwrap();
    let entry = cache.store().get(&key).await.unwrap().unwrap();
    let range = cache.store().range(&entry, 5, 300_004).await.unwrap();
    assert_eq!(range.bytes().await.unwrap(), &big[5..300_005]);

    // A body leaves memory with its entry.
    cache.store().remove(&key).await.unwrap();
    assert_eq!(cache.store().stats().memory_entries, 1);
}

#[tokio::test]
async fn bodies_are_not_kept_in_memory_when_it_is_off_or_they_are_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let store_cfg = StoreConfig {
        memory_max_object: 50_000,
        ..StoreConfig::default()
    };
    let cache = cache_with(dir.path(), store_cfg, Default::default()).await;
    origin_answer(&cache, &get(DEB_A), &ok(&[]), &body_of(50_001, 1), t(0))
        .await
        .unwrap();
    let off = tempfile::tempdir().unwrap();
    let store_cfg = StoreConfig {
        memory_size: 0,
        ..StoreConfig::default()
    };
    let cache_off = cache_with(off.path(), store_cfg, Default::default()).await;
    origin_answer(&cache_off, &get(DEB_A), &ok(&[]), &body_of(10, 1), t(0))
        .await
        .unwrap();
    for cache in [&cache, &cache_off] {
        for _ in 0..2 {
            let Lookup::Hit(hit) = cache.lookup(&get(DEB_A), t(1)).await.unwrap() else {
                panic!("should hit");
            };
            hit.body.bytes().await.unwrap();
        }
        let stats = cache.store().stats();
        assert_eq!((stats.memory_entries, stats.memory_hits), (0, 0));
    }
}
