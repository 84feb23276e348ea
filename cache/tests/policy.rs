//! Caching policy end to end through `Cache`, with injected time.

mod support;

use std::time::{Duration, SystemTime};

use cistern_cache::{
    Cache, Hit, Lookup, MissReason, NoStoreReason, PolicyConfig, Revalidation, StoreStart,
};
use http::StatusCode;
use support::*;

const FILE: &str = "https://files.example.test/assets/app.js";

/// The hit for `req` at `now`; panics with the lookup's answer otherwise.
async fn hit_at(cache: &Cache, req: &http::request::Parts, now: SystemTime) -> Box<Hit> {
    match cache.lookup(req, now).await.unwrap() {
        Lookup::Hit(hit) => hit,
        other => panic!("should hit: {other:?}"),
    }
}

/// Looks `FILE` up at `now`, which must find it stale, and answers the
/// revalidation with a 304 carrying `headers`: the refreshed hit.
async fn revalidated_304_at(cache: &Cache, now: SystemTime, headers: &[(&str, &str)]) -> Box<Hit> {
    let Lookup::Stale(stale) = cache.lookup(&get(FILE), now).await.unwrap() else {
        panic!("should be stale");
    };
    let not_modified = status(StatusCode::NOT_MODIFIED, headers);
    let Revalidation::NotModified(hit) =
        cache.revalidated(*stale, &not_modified, now).await.unwrap()
    else {
        panic!("304 should refresh");
    };
    hit
}

#[tokio::test]
async fn max_age_is_fresh_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let res = ok(&[("cache-control", "max-age=300"), ("etag", "\"v1\"")]);
    origin_answer(&cache, &get(FILE), &res, b"console.log(1)", t(0))
        .await
        .unwrap();

    assert!(matches!(
        cache.lookup(&get(FILE), t(299)).await.unwrap(),
        Lookup::Hit(_)
    ));
    let Lookup::Stale(stale) = cache.lookup(&get(FILE), t(301)).await.unwrap() else {
        panic!("expired entry must revalidate");
    };
    assert_eq!(stale.revalidation.headers["if-none-match"], "\"v1\"");
}

#[tokio::test]
async fn a_304_refreshes_the_stored_entry_without_a_new_body() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let res = ok(&[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("x-build", "1"),
    ]);
    origin_answer(&cache, &get(FILE), &res, b"body v1", t(0))
        .await
        .unwrap();

    let headers = [
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("x-build", "2"),
    ];
    let hit = revalidated_304_at(&cache, t(100), &headers).await;
    assert_eq!(hit.response.status, 200);
    assert_eq!(hit.body.bytes().await.unwrap(), &b"body v1"[..]);

    // Fresh again for another max-age from the revalidation, and persisted.
    let Lookup::Hit(hit) = cache.lookup(&get(FILE), t(150)).await.unwrap() else {
        panic!("refreshed entry should be fresh");
    };
    assert_eq!(hit.entry.meta.headers["x-build"], "2");
    assert!(matches!(
        cache.lookup(&get(FILE), t(161)).await.unwrap(),
        Lookup::Stale(_)
    ));
}

#[tokio::test]
async fn a_200_on_revalidation_means_modified() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let res = ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")]);
    origin_answer(&cache, &get(FILE), &res, b"v1", t(0))
        .await
        .unwrap();
    let Lookup::Stale(stale) = cache.lookup(&get(FILE), t(5)).await.unwrap() else {
        panic!("should be stale");
    };
    let new = ok(&[("cache-control", "max-age=1"), ("etag", "\"v2\"")]);
    assert!(matches!(
        cache.revalidated(*stale, &new, t(5)).await.unwrap(),
        Revalidation::Modified
    ));
    origin_answer(&cache, &get(FILE), &new, b"v2", t(5))
        .await
        .unwrap();
    let Lookup::Hit(hit) = cache.lookup(&get(FILE), t(5)).await.unwrap() else {
        panic!("new body stored");
    };
    assert_eq!(hit.body.bytes().await.unwrap(), &b"v2"[..]);
}

#[tokio::test]
async fn vary_selects_the_stored_variant_only_for_matching_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let gzip = get_with(FILE, &[("accept-encoding", "gzip")]);
    let br = get_with(FILE, &[("accept-encoding", "br")]);
    let res = ok(&[
        ("cache-control", "max-age=60"),
        ("vary", "Accept-Encoding"),
        ("content-encoding", "gzip"),
    ]);
    origin_answer(&cache, &gzip, &res, b"gzipped", t(0))
        .await
        .unwrap();

    assert!(matches!(
        cache.lookup(&gzip, t(1)).await.unwrap(),
        Lookup::Hit(_)
    ));
    let Lookup::Miss(miss) = cache.lookup(&br, t(1)).await.unwrap() else {
        panic!("other encoding must not get the gzip body");
    };
    assert_eq!(miss.reason, MissReason::VaryMismatch);
    assert!(miss.key.is_variant(), "{}", miss.key);

    // The other variant is stored beside the first, not instead of it.
    let res_br = ok(&[
        ("cache-control", "max-age=60"),
        ("vary", "Accept-Encoding"),
        ("content-encoding", "br"),
    ]);
    origin_answer(&cache, &br, &res_br, b"brotli", t(2))
        .await
        .unwrap();
    assert_eq!(cache.store().stats().entries, 2);
    for (req, body) in [(&gzip, &b"gzipped"[..]), (&br, &b"brotli"[..])] {
        let Lookup::Hit(hit) = cache.lookup(req, t(3)).await.unwrap() else {
            panic!("each variant hits");
        };
        assert_eq!(hit.body.bytes().await.unwrap(), body);
    }
    // A third one is a miss of its own variant; purging the URL takes all.
    let none = get_with(FILE, &[("accept-encoding", "identity")]);
    let Lookup::Miss(third) = cache.lookup(&none, t(3)).await.unwrap() else {
        panic!("a third encoding has nothing stored");
    };
    assert_ne!(third.key, miss.key);
    assert_eq!(cache.store().purge(FILE).await.unwrap(), 2);
    assert_eq!(cache.store().stats().entries, 0);
}

#[tokio::test]
async fn no_store_and_private_responses_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    for (cc, reason) in [
        ("no-store", NoStoreReason::NoStoreResponse),
        ("private, max-age=600", NoStoreReason::PrivateResponse),
    ] {
        match cache
            .store_response(&get(FILE), &ok(&[("cache-control", cc)]), t(0))
            .await
            .unwrap()
        {
            StoreStart::NoStore(got) => assert_eq!(got, reason),
            StoreStart::Store(_) => panic!("{cc} must not be stored"),
        }
    }
    assert!(matches!(
        cache.lookup(&get(FILE), t(1)).await.unwrap(),
        Lookup::Miss(_)
    ));
    assert_eq!(cache.store().stats().entries, 0);
}

#[tokio::test]
async fn error_statuses_are_not_stored_even_under_the_immutable_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let deb = get("https://deb.example.test/debian/pool/main/x/x_1_amd64.deb");
    match cache
        .store_response(&deb, &status(StatusCode::NOT_FOUND, &[]), t(0))
        .await
        .unwrap()
    {
        StoreStart::NoStore(reason) => assert_eq!(reason, NoStoreReason::Status(404)),
        StoreStart::Store(_) => panic!("a 404 must not become immutable"),
    }
}

#[tokio::test]
async fn a_deb_without_cache_headers_is_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let deb = get("https://deb.example.test/debian/pool/main/h/hello/hello_2.10_amd64.deb");
    origin_answer(&cache, &deb, &ok(&[]), b"!<arch>", t(0))
        .await
        .unwrap();

    let ninety_days = 90 * 24 * 3600;
    let Lookup::Hit(hit) = cache.lookup(&deb, t(ninety_days)).await.unwrap() else {
        panic!("pool files stay fresh without headers");
    };
    assert!(hit.response.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    // A client's no-cache does not force a re-download of a versioned file.
    let nocache = get_with(
        deb.uri.to_string().as_str(),
        &[("cache-control", "no-cache")],
    );
    assert!(matches!(
        cache.lookup(&nocache, t(ninety_days)).await.unwrap(),
        Lookup::Hit(_)
    ));
}

#[tokio::test]
async fn release_files_always_revalidate() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let release = get("https://deb.example.test/debian/dists/stable/Release");
    let res = ok(&[
        ("cache-control", "max-age=86400"),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]);
    origin_answer(&cache, &release, &res, b"Origin: Example", t(0))
        .await
        .unwrap();

    let Lookup::Stale(stale) = cache.lookup(&release, t(1)).await.unwrap() else {
        panic!("Release must be revalidated even when the origin says max-age");
    };
    assert_eq!(
        stale.revalidation.headers["if-modified-since"],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    let nm = status(
        StatusCode::NOT_MODIFIED,
        &[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
    );
    assert!(matches!(
        cache.revalidated(*stale, &nm, t(2)).await.unwrap(),
        Revalidation::NotModified(_)
    ));
    // Still revalidates next time.
    assert!(matches!(
        cache.lookup(&release, t(3)).await.unwrap(),
        Lookup::Stale(_)
    ));
}

#[tokio::test]
async fn stale_if_error_serves_a_recent_entry_when_the_origin_fails() {
    let dir = tempfile::tempdir().unwrap();
    let policy = PolicyConfig {
        stale_if_error: Some(Duration::from_secs(3600)),
        ..PolicyConfig::default()
    };
    let cache = cache_with(dir.path(), Default::default(), policy).await;
    let index = get("https://py.example.test/simple/requests/");
    origin_answer(&cache, &index, &ok(&[("etag", "\"s1\"")]), b"<html>", t(0))
        .await
        .unwrap();

    let Lookup::Stale(stale) = cache.lookup(&index, t(60)).await.unwrap() else {
        panic!("simple pages revalidate");
    };
    let hit = cache
        .stale_if_error(*stale, t(60))
        .await
        .unwrap()
        .expect("serve stale");
    assert_eq!(hit.body.bytes().await.unwrap(), &b"<html>"[..]);

    let Lookup::Stale(stale) = cache.lookup(&index, t(7200)).await.unwrap() else {
        panic!("simple pages revalidate");
    };
    assert!(cache
        .stale_if_error(*stale, t(7200))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let head = http::Request::head(FILE).body(()).unwrap().into_parts().0;
    assert!(matches!(
        cache
            .store_response(&head, &ok(&[("cache-control", "max-age=60")]), t(0))
            .await
            .unwrap(),
        StoreStart::NoStore(NoStoreReason::HeadRequest)
    ));
    origin_answer(
        &cache,
        &get(FILE),
        &ok(&[("cache-control", "max-age=60")]),
        b"x",
        t(0),
    )
    .await
    .unwrap();
    assert!(matches!(
        cache.lookup(&head, t(1)).await.unwrap(),
        Lookup::Hit(_)
    ));
}

#[tokio::test]
async fn a_bare_304_refreshes_an_entry_stored_with_last_modified() {
    // Python's http.server: Last-Modified and no ETag on the 200, a 304
    // with neither on revalidation.
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
    let res = ok(&[("cache-control", "max-age=60"), ("last-modified", lm)]);
    origin_answer(&cache, &get(FILE), &res, b"body v1", t(0))
        .await
        .unwrap();

    let Lookup::Stale(stale) = cache.lookup(&get(FILE), t(100)).await.unwrap() else {
        panic!("should be stale");
    };
    assert_eq!(stale.revalidation.headers["if-modified-since"], lm);
    let bare = status(StatusCode::NOT_MODIFIED, &[("server", "SimpleHTTP/0.6")]);
    let Revalidation::NotModified(hit) = cache.revalidated(*stale, &bare, t(100)).await.unwrap()
    else {
        panic!("a 304 is a 304: the body must not be downloaded again");
    };
    assert_eq!(hit.body.bytes().await.unwrap(), &b"body v1"[..]);
    let Lookup::Hit(hit) = cache.lookup(&get(FILE), t(150)).await.unwrap() else {
        panic!("refreshed entry should be fresh");
    };
    assert_eq!(hit.entry.meta.headers["last-modified"], lm);
}

/// A response that sets a cookie was made for the client whose request
/// reached the origin (its body may name that client's session): under
/// HTTP's own rules (`default`) and `revalidate` rules it is not stored,
/// whatever its `Cache-Control` says, so the next job asks the origin.
#[tokio::test]
async fn responses_that_set_a_cookie_are_not_stored_outside_immutable_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    let index = "https://deb.example.test/debian/dists/stable/InRelease";
    for url in [FILE, index] {
        let res = ok(&[
            ("cache-control", "public, max-age=300"),
            ("etag", "\"v1\""),
            ("set-cookie", "session=first-client; Path=/"),
        ]);
        match cache.store_response(&get(url), &res, t(0)).await.unwrap() {
            StoreStart::NoStore(reason) => assert_eq!(reason, NoStoreReason::SetsCookie),
            StoreStart::Store(_) => panic!("{url}: a response setting a cookie was stored"),
        }
        assert!(matches!(
            cache.lookup(&get(url), t(1)).await.unwrap(),
            Lookup::Miss(_)
        ));
    }
    assert_eq!(cache.store().stats().entries, 0);
    assert_eq!(
        NoStoreReason::SetsCookie.to_string(),
        "response sets a cookie (only immutable rules store it)"
    );
}

/// A cookie the origin set is that client's: a package file an immutable
/// rule stores is served to other jobs without it, and a stored entry
/// refreshed by a 304 that sets one never replays it.
#[tokio::test]
async fn cookies_set_by_the_origin_are_not_stored_or_replayed_on_hits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    fn no_cookie(hit: &Hit) {
        let headers = &hit.response.headers;
        assert!(!headers.contains_key("set-cookie"), "{headers:?}");
        assert!(!hit.entry.meta.headers.contains_key("set-cookie"));
    }
    // A package file is immutable by rule (the same bytes for everyone):
    // stored, but the cookie would be replayed on every hit for a year if
    // it were kept.
    let deb = get("https://deb.example.test/debian/pool/main/c/cdn/cdn_1.0_amd64.deb");
    let res = ok(&[
        ("cache-control", "max-age=300"),
        ("set-cookie", "__cdn_bm=first-client"),
        ("set-cookie", "lb=node-3"),
    ]);
    origin_answer(&cache, &deb, &res, b"!<arch>", t(0))
        .await
        .expect("an immutable artifact is stored");
    no_cookie(&*hit_at(&cache, &deb, t(3600)).await);

    let res = ok(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    origin_answer(&cache, &get(FILE), &res, b"body v1", t(0))
        .await
        .unwrap();
    let headers = [
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("set-cookie", "session=revalidating-client"),
    ];
    no_cookie(&*revalidated_304_at(&cache, t(100), &headers).await);
    // Fresh again after the 304.
    no_cookie(&*hit_at(&cache, &get(FILE), t(110)).await);
}

/// Stores an index the way an origin without validators sends it (no
/// `ETag`, no `Last-Modified`) at `now`.
async fn store_unvalidated(cache: &Cache, req: &http::request::Parts, now: SystemTime) {
    let res = ok(&[("content-type", "application/gzip")]);
    origin_answer(cache, req, &res, b"APKINDEX v1", now)
        .await
        .expect("stored");
}

#[tokio::test]
async fn an_index_without_validators_is_served_within_the_unvalidated_window() {
    let dir = tempfile::tempdir().unwrap();
    let policy = PolicyConfig {
        unvalidated_window: Duration::from_secs(10),
        ..PolicyConfig::default()
    };
    let cache = cache_with(dir.path(), Default::default(), policy).await;
    let index = get("https://apk.example.test/alpine/v3.19/main/x86_64/APKINDEX.tar.gz");
    store_unvalidated(&cache, &index, t(0)).await;

    // Within the window: served as stored, without asking the origin, even
    // to a client asking for a revalidated copy (apt sends max-age=0).
    let hit = hit_at(&cache, &index, t(9)).await;
    assert_eq!(hit.body.bytes().await.unwrap(), &b"APKINDEX v1"[..]);
    assert_eq!(hit.response.headers["age"], "9");
    assert_eq!(
        hit.reason.to_string(),
        "index without validators downloaded 9s ago, within the unvalidated window"
    );
    let max_age_0 = get_with(
        index.uri.to_string().as_str(),
        &[("cache-control", "max-age=0")],
    );
    hit_at(&cache, &max_age_0, t(9)).await;

    // After it: the origin is asked again (unconditionally: nothing to
    // send); its answer starts a new window.
    let Lookup::Stale(stale) = cache.lookup(&index, t(10)).await.unwrap() else {
        panic!("the window is over");
    };
    assert!(!stale.revalidation.headers.contains_key("if-none-match"));
    assert!(!stale.revalidation.headers.contains_key("if-modified-since"));
    store_unvalidated(&cache, &index, t(10)).await;
    hit_at(&cache, &index, t(19)).await;
}

#[tokio::test]
async fn the_unvalidated_window_leaves_validated_and_non_index_entries_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path()).await;
    // An index with a validator revalidates: a 304 is cheap.
    let release = get("https://deb.example.test/debian/dists/stable/Release");
    origin_answer(&cache, &release, &ok(&[("etag", "\"r1\"")]), b"Suite", t(0))
        .await
        .unwrap();
    assert!(matches!(
        cache.lookup(&release, t(1)).await.unwrap(),
        Lookup::Stale(_)
    ));
    // A file under plain HTTP semantics that says no-cache is the origin's
    // choice, window or not.
    let page = get("https://files.example.test/assets/status.json");
    origin_answer(
        &cache,
        &page,
        &ok(&[("cache-control", "no-cache")]),
        b"{}",
        t(0),
    )
    .await
    .unwrap();
    assert!(matches!(
        cache.lookup(&page, t(1)).await.unwrap(),
        Lookup::Stale(_)
    ));
}

#[tokio::test]
async fn with_a_zero_unvalidated_window_an_index_without_validators_always_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let policy = PolicyConfig {
        unvalidated_window: Duration::ZERO,
        ..PolicyConfig::default()
    };
    let cache = cache_with(dir.path(), Default::default(), policy).await;
    let index = get("https://conda.example.test/conda-forge/linux-64/repodata.json");
    store_unvalidated(&cache, &index, t(0)).await;
    for at in [0, 1, 5] {
        assert!(
            matches!(cache.lookup(&index, t(at)).await.unwrap(), Lookup::Stale(_)),
            "at {at}s"
        );
    }
}

/// Twenty jobs starting within a minute, each fetching one index whose
/// origin sends no validators, one after another (concurrent ones share
/// one request in the proxy): the origin downloads it once per window.
/// Prints the figures for several windows:
/// `cargo test -p cistern-cache --test policy twenty_jobs -- --nocapture`.
#[tokio::test]
async fn twenty_jobs_a_minute_download_an_index_without_validators_once_per_window() {
    // One job every three seconds: the window's worst case, as no two
    // share a request by arriving together.
    let starts: Vec<u64> = (0..20).map(|job| job * 3).collect();
    let index_size = 2_500_000u64;
    let mut figures = Vec::new();
    for window in [0u64, 5, 10, 30, 60] {
        let dir = tempfile::tempdir().unwrap();
        let policy = PolicyConfig {
            unvalidated_window: Duration::from_secs(window),
            ..PolicyConfig::default()
        };
        let cache = cache_with(dir.path(), Default::default(), policy).await;
        let index = get("https://rpm.example.test/el9/repodata/repomd.xml");
        let mut downloads = 0u64;
        for &at in &starts {
            if !matches!(cache.lookup(&index, t(at)).await.unwrap(), Lookup::Hit(_)) {
                downloads += 1;
                store_unvalidated(&cache, &index, t(at)).await;
            }
        }
        figures.push((window, downloads));
        println!(
            "unvalidated_window {window:>2}s: {downloads:>2} downloads for 20 jobs, \
             {:.1} MB of {:.1} MB for a {:.1} MB index",
            (downloads * index_size) as f64 / 1e6,
            (20 * index_size) as f64 / 1e6,
            index_size as f64 / 1e6
        );
    }
    assert_eq!(figures[0], (0, 20), "no window: every job downloads");
    let ten = figures.iter().find(|(w, _)| *w == 10).unwrap().1;
    assert_eq!(ten, 5, "a 10s window: one download per 12s (four jobs)");
}
