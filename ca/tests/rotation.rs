//! Rotation across simulated time: every container keeps getting leaves its CA vouches for
//! during its whole job, generations come and go, and a client is steered to the right CA.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cistern_ca::{CaCert, CaConfig, CaStore, Error};
use support::*;

#[test]
fn a_container_gets_leaves_from_its_own_ca_for_its_whole_job() {
    let (_dir, store) = store(t0());
    let max_job = hours(3);
    let mut containers: Vec<(time::OffsetDateTime, CaCert)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut most_alive = 0;

    // Three and a half days in 20-minute steps; a maintenance tick and a new container at
    // each step, and every container still within its job asks for a leaf.
    let step = minutes(20);
    let mut now = t0();
    while now < t0() + hours(84) {
        store.tick(now).unwrap();
        let ca = store.current_for_new_container(now).unwrap();
        assert!(
            ca.not_after >= now + max_job,
            "handed out a CA expiring at {} at {now}",
            ca.not_after
        );
        seen.insert(ca.id.clone());
        containers.push((now, ca));
        most_alive = most_alive.max(store.cas_valid_at(now).len());

        for (created, ca) in containers.iter().filter(|(t, _)| now <= *t + max_job) {
            let leaf = store
                .leaf_for_client(Some(&ca.id), "deb.example.test", now)
                .unwrap();
            assert_eq!(
                leaf.ca_id(),
                &ca.id,
                "container created {created}, now {now}"
            );
            verify(ca, &leaf, now)
                .unwrap_or_else(|e| panic!("container created {created}, now {now}: {e}"));
        }
        now += step;
    }
    // Default 24 h lifetime with 3 h + 10 min hand-out margin: a new CA about every 20 h 50.
    assert!(seen.len() >= 4, "only {} generations", seen.len());
    assert!(most_alive <= 3, "{most_alive} generations alive at once");
}

#[test]
fn rotation_happens_when_less_than_a_job_and_margin_is_left() {
    let (_dir, store) = store(t0());
    let first = store.current_for_new_container(t0()).unwrap();
    // CA valid until t0 + 24h; rotation due once less than 3h10 is left.
    let before = first.not_after - hours(3) - minutes(11);
    assert_eq!(store.tick(before).unwrap().rotated, None);
    assert_eq!(
        store.current_for_new_container(before).unwrap().id,
        first.id
    );

    let due = first.not_after - hours(3) - minutes(9);
    let report = store.tick(due).unwrap();
    let second = report.rotated.expect("rotated");
    assert_ne!(second, first.id);
    assert_eq!(store.current_for_new_container(due).unwrap().id, second);
    // The old CA still signs for the containers that have it.
    let leaf = store.issue_leaf(&first.id, "example.test", due).unwrap();
    verify(&first, &leaf, due).unwrap();
    // Both are in the trust bundle, newest first.
    let bundle = store.ca_pems_valid_at(due);
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[1], first.pem, "older CA second in the bundle");
}

#[test]
fn a_missed_tick_still_hands_out_a_ca_that_outlives_the_job() {
    let (_dir, store) = store(t0());
    let first = store.current_for_new_container(t0()).unwrap();
    let late = first.not_after - hours(1);
    let ca = store.current_for_new_container(late).unwrap();
    assert_ne!(ca.id, first.id);
    assert!(ca.not_after >= late + hours(3));
}

#[test]
fn expired_ca_is_dropped_and_its_files_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    let store = CaStore::open(config(&state), t0()).unwrap();
    let first = store.current_for_new_container(t0()).unwrap();
    let key_file = state.join(format!("{}.key.pem", first.id));
    let cert_file = state.join(format!("{}.crt.pem", first.id));
    assert!(key_file.exists() && cert_file.exists());

    // Just before expiry it is still kept (a container may still use it).
    store.tick(first.not_after - minutes(1)).unwrap();
    assert!(key_file.exists());
    assert!(store.get(&first.id).is_some());

    let report = store.tick(first.not_after).unwrap();
    assert_eq!(report.removed, vec![first.id.clone()]);
    assert!(!key_file.exists(), "expired key still on disk");
    assert!(!cert_file.exists());
    assert!(store.get(&first.id).is_none());
    let err = store
        .issue_leaf(&first.id, "example.test", first.not_after)
        .unwrap_err();
    assert!(matches!(err, Error::UnknownCa { .. }), "{err}");
    // Exactly the current generation's files remain.
    let files: BTreeSet<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let current = store.current_for_new_container(first.not_after).unwrap();
    let expected: BTreeSet<String> = [
        format!("{}.crt.pem", current.id),
        format!("{}.key.pem", current.id),
    ]
    .into();
    assert_eq!(files, expected);
}

#[test]
fn unknown_or_expired_client_ca_falls_back_to_the_newest_valid_ca() {
    let (_dir, store) = store(t0());
    let first = store.current_for_new_container(t0()).unwrap();
    let second = store.rotate(t0() + hours(1)).unwrap();
    let now = t0() + hours(2);

    assert_eq!(store.signer(Some(&first.id), now).unwrap().id(), &first.id);
    assert_eq!(store.signer(None, now).unwrap().id(), &second.id);
    let stranger = cistern_ca::CaId::parse("0123456789abcdef").unwrap();
    assert_eq!(store.signer(Some(&stranger), now).unwrap().id(), &second.id);

    // After the first expired, its clients are steered to the newest.
    let later = first.not_after + minutes(1);
    assert_eq!(
        store.signer(Some(&first.id), later).unwrap().id(),
        &second.id
    );
    let leaf = store
        .leaf_for_client(Some(&first.id), "example.test", later)
        .unwrap();
    verify(&second, &leaf, later).unwrap();
}

#[test]
fn pick_trusted_chooses_the_newest_valid_ca_the_client_trusts() {
    let (_dir, store) = store(t0());
    let a = store.current_for_new_container(t0()).unwrap();
    let b = store.rotate(t0() + hours(1)).unwrap();
    let c = store.rotate(t0() + hours(2)).unwrap();
    let now = t0() + hours(3);

    assert_eq!(store.pick_trusted([&a.id, &b.id], now).unwrap().id(), &b.id);
    assert_eq!(store.pick_trusted([&a.id], now).unwrap().id(), &a.id);
    assert_eq!(store.pick_trusted([], now).unwrap().id(), &c.id);
    // `a` expired: a client trusting only `a` gets the newest (and will fail, visibly).
    assert_eq!(
        store.pick_trusted([&a.id], a.not_after).unwrap().id(),
        &c.id
    );
}

#[test]
fn cached_leaf_is_reused_until_shortly_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path())
        .with_leaf_lifetime(Duration::from_secs(3600))
        .validate()
        .unwrap();
    let store = CaStore::open(config, t0()).unwrap();
    let ca = store.current_for_new_container(t0()).unwrap();
    let now = t0() + hours(2);

    let first = store.issue_leaf(&ca.id, "example.test", now).unwrap();
    let again = store
        .issue_leaf(&ca.id, "EXAMPLE.test.", now + minutes(30))
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "not reused");
    assert_eq!(store.cached_leaves(), 1);

    // One-hour leaf (plus 5 min backdate): refreshed in its last 5 minutes.
    let late = first.not_after() - minutes(4);
    let fresh = store.issue_leaf(&ca.id, "example.test", late).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &fresh), "stale leaf reused");
    assert!(fresh.not_after() > first.not_after());
    verify(&ca, &fresh, late).unwrap();
}

#[test]
fn changing_the_domains_rotates_and_keeps_the_old_ca_for_its_containers() {
    let dir = tempfile::tempdir().unwrap();
    let old_store = CaStore::open(config(dir.path()), t0()).unwrap();
    let old = old_store.current_for_new_container(t0()).unwrap();
    drop(old_store);

    let now = t0() + hours(1);
    let config = CaConfig::new(dir.path(), ["other.test"]).unwrap();
    let store = CaStore::open(config, now).unwrap();
    let new = store.current_for_new_container(now).unwrap();
    assert_ne!(new.id, old.id);
    store.issue_leaf(&new.id, "mirror.other.test", now).unwrap();
    let err = store.issue_leaf(&new.id, "example.test", now).unwrap_err();
    assert!(matches!(err, Error::NotPermitted { .. }), "{err}");
    // The old CA keeps its own constraints for the containers that were given it.
    let leaf = store.issue_leaf(&old.id, "example.test", now).unwrap();
    verify(&old, &leaf, now).unwrap();
}

#[test]
fn concurrent_container_creations_at_rotation_time_create_one_generation() {
    let (_dir, store) = store(t0());
    let first = store.current_for_new_container(t0()).unwrap();
    let due = first.not_after - hours(2);
    let store = std::sync::Arc::new(store);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || store.current_for_new_container(due).unwrap().id)
        })
        .collect();
    let ids: BTreeSet<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(!ids.contains(&first.id));
    assert_eq!(store.cas_valid_at(due).len(), 2);
}
