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
async fn a_range_after_restart_verifies_the_content_first() {
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
    let err = store.range(&entry, 0, 9).await.unwrap_err();
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
