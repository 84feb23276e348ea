//! Concurrent misses for one key: one origin fetch, everyone gets the body.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cistern_cache::{Lookup, SingleFlight, StoreConfig, StoreStart, WaitOutcome};
use support::*;

const WHL: &str = "https://py.example.test/packages/ab/cd/pkg-1.0-py3-none-any.whl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_fetch_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body_of(200_000, 5));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, fetches, body) = (cache.clone(), fetches.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let req = get(WHL);
            let Lookup::Miss(miss) = cache.lookup(&req, t(0)).await.unwrap() else {
                // Arrived after the commit: a plain hit.
                return;
            };
            let outcome = cache
                .store()
                .single_flight(&miss.key, || async {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    // The origin is slow; everyone else piles up behind us.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let StoreStart::Store(mut w) =
                        cache.store_response(&req, &ok(&[]), t(0)).await?
                    else {
                        unreachable!("wheels are stored");
                    };
                    w.write(&body).await?;
                    w.commit().await
                })
                .await
                .unwrap();
            let got = match outcome {
                SingleFlight::Fetched(entry) => entry.unwrap(),
                SingleFlight::Cached(entry) => *entry,
                SingleFlight::GoToOrigin(why) => panic!("follower fell back: {why}"),
            };
            let read = cache
                .store()
                .body(&got)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(read, body.as_slice());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn followers_fall_back_when_the_leader_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let key = cistern_cache::CacheKey::from_request(&get(WHL)).unwrap();
    let cistern_cache::Flight::Leader(guard) = cache.store().lock(&key) else {
        panic!("first caller leads");
    };
    let follower = {
        let cache = cache.clone();
        let key = key.clone();
        tokio::spawn(async move {
            cache
                .store()
                .single_flight(&key, || async { Ok::<_, ()>(()) })
                .await
                .unwrap()
        })
    };
    tokio::task::yield_now().await;
    drop(guard); // origin failed
    assert!(matches!(
        follower.await.unwrap(),
        SingleFlight::GoToOrigin(WaitOutcome::Failed) | SingleFlight::Fetched(Ok(()))
    ));
}

#[tokio::test(start_paused = true)]
async fn followers_do_not_wait_forever() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        lock_timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    };
    let cache = cache_with(dir.path(), cfg, Default::default()).await;
    let key = cistern_cache::CacheKey::from_request(&get(WHL)).unwrap();
    let _stuck_leader = cache.store().lock(&key);
    let outcome = cache
        .store()
        .single_flight(&key, || async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        SingleFlight::GoToOrigin(WaitOutcome::TimedOut)
    ));
}

/// A writer for `WHL`, as the single-flight leader opens it.
async fn writer_for(cache: &cistern_cache::Cache) -> Box<cistern_cache::Writer> {
    match cache
        .store_response(&get(WHL), &ok(&[]), t(0))
        .await
        .unwrap()
    {
        StoreStart::Store(writer) => writer,
        StoreStart::NoStore(why) => panic!("not stored: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reads_the_body_while_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(1024 * 1024 + 11, 6);
    let mut writer = writer_for(&cache).await;
    let mut reader = writer.tail().reader();
    // Most of the body is on its way to disk, none of it committed: the
    // follower already gets the first pieces.
    writer.write(&body[..900 * 1024]).await.unwrap();
    let mut got = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), reader.chunk())
        .await
        .expect("bytes before the commit")
        .unwrap()
        .unwrap();
    got.extend_from_slice(&first);
    assert!(cache.store().stats().entries == 0, "nothing committed yet");
    writer.write(&body[900 * 1024..]).await.unwrap();
    let committed = tokio::spawn(async move { writer.commit().await.unwrap() });
    while let Some(chunk) = reader.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, body);
    committed.await.unwrap();
    assert_eq!(cache.store().stats().entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_an_aborted_write_gets_an_error_not_a_short_body() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(700 * 1024, 7);
    let mut writer = writer_for(&cache).await;
    let tail = writer.tail();
    writer.write(&body).await.unwrap();
    let mut reader = tail.reader();
    let first = reader.chunk().await.unwrap().unwrap();
    assert_eq!(first, &body[..first.len()]);
    drop(writer);
    let err = loop {
        match reader.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("an aborted download must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("abort"), "{err}");
    assert_eq!(cache.store().stats().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_can_read_the_rest_of_its_download_from_where_it_got_to() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let body = body_of(1024 * 1024 + 17, 8);
    let mut writer = writer_for(&cache).await;
    let tail = writer.tail();
    // The leader's own reader does not count as a follower.
    let mut rest = tail.reader_from(300_000);
    let followed = tokio::time::timeout(Duration::from_millis(200), tail.followed()).await;
    assert!(followed.is_err(), "no follower yet");
    let mut follower = tail.reader();
    tokio::time::timeout(Duration::from_secs(5), tail.followed())
        .await
        .expect("a follower joined");

    writer.write(&body).await.unwrap();
    let committed = tokio::spawn(async move { writer.commit().await.unwrap() });
    let mut got = Vec::new();
    while let Some(chunk) = rest.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(got == body[300_000..], "the rest: {} bytes", got.len());
    let mut whole = Vec::new();
    while let Some(chunk) = follower.chunk().await.unwrap() {
        whole.extend_from_slice(&chunk);
    }
    assert!(whole == body);
    committed.await.unwrap();
}

/// A follower right behind the writer maps whatever is on disk each time
/// (windows of every size, starting mid-piece), or reads it with mapping
/// off: either way it gets every byte, and mapped pieces name the file and
/// offset they come from (what lets a plain socket `sendfile` them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_right_behind_the_writer_gets_every_byte_mapped_or_read() {
    let body = body_of(5 * 1024 * 1024 + 17, 9);
    for map_reads in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            map_reads,
            ..StoreConfig::default()
        };
        let cache = cache_with(dir.path(), config, Default::default()).await;
        let mut writer = writer_for(&cache).await;
        let tail = writer.tail();
        let mut readers = [tail.reader(), tail.reader_from(300_001)];
        let written = body.clone();
        let writing = tokio::spawn(async move {
            for piece in written.chunks(100_003) {
                writer.write(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            writer.commit().await.unwrap();
        });
        for (reader, from) in readers.iter_mut().zip([0usize, 300_001]) {
            let mut got = Vec::new();
            while let Some(chunk) = reader.chunk().await.unwrap() {
                let at = (from + got.len()) as u64;
                match cistern_cache::mapped_source(&chunk) {
                    Some((_, offset)) => {
                        assert!(map_reads, "a read piece claims a mapping");
                        assert_eq!(offset, at, "map_reads {map_reads}");
                    }
                    None => assert!(!map_reads, "piece at {at} was not mapped"),
                }
                got.extend_from_slice(&chunk);
            }
            assert!(
                got == body[from..],
                "map_reads {map_reads}, from {from}: {} bytes",
                got.len()
            );
        }
        writing.await.unwrap();
    }
}
