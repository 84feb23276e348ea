//! Changing the cached domains between restarts: a domain added gets leaves from the
//! generation created with it, so containers created after the change reach it at once; the
//! names kept stay with the older generation the containers created before hold; a domain
//! removed gets no leaf at all. Every leaf is checked the way a container verifies it: with
//! a real rustls verifier trusting the bundle it was given (every generation valid at its
//! creation).

mod support;

use std::path::Path;

use cistern_ca::{CaCert, CaConfig, CaStore, Error};
use support::*;

/// Opens the store in `dir` with `domains` at `now`, as cistern does at start.
fn open(dir: &Path, domains: &[&str], now: time::OffsetDateTime) -> CaStore {
    CaStore::open(CaConfig::new(dir, domains).unwrap(), now).unwrap()
}

/// What the injection gives a container created at `now`: a CA that outlives the job is made
/// sure of, then every generation valid now.
fn bundle_for_new_container(store: &CaStore, now: time::OffsetDateTime) -> Vec<CaCert> {
    let current = store.current_for_new_container(now).unwrap();
    let bundle = store.cas_valid_at(now);
    assert!(bundle.iter().any(|ca| ca.id == current.id));
    bundle
}

#[test]
fn a_domain_added_gets_leaves_from_the_generation_made_with_it_and_old_names_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &["example.test"], t0());
    let old_container = bundle_for_new_container(&store, t0());
    assert_eq!(old_container.len(), 1);
    drop(store);

    // Restart with a domain added.
    let now = t0() + hours(1);
    let store = open(dir.path(), &["example.test", "added.test"], now);
    let new_container = bundle_for_new_container(&store, now);
    assert_eq!(new_container.len(), 2, "the old generation and a new one");
    let new = store.current_for_new_container(now).unwrap();
    assert!(!old_container.iter().any(|ca| ca.id == new.id));
    assert_eq!(
        store.get(&new.id).unwrap().domains(),
        ["added.test", "example.test"]
    );

    // The new name: signed by the new generation, which the new container holds.
    let leaf = store.leaf_for_name("mirror.added.test", now).unwrap();
    assert_eq!(leaf.ca_id(), &new.id);
    verify_with_bundle(&new_container, &leaf, now).unwrap();
    // (The old container was never given it, and could not verify it.)
    assert!(verify_with_bundle(&old_container, &leaf, now).is_err());

    // The old name: still the old generation, which both containers hold.
    let leaf = store.leaf_for_name("deb.example.test", now).unwrap();
    assert_eq!(leaf.ca_id(), &old_container[0].id);
    verify_with_bundle(&old_container, &leaf, now).unwrap();
    verify_with_bundle(&new_container, &leaf, now).unwrap();

    // Once the old generation has expired, the new one signs both names.
    let later = old_container[0].not_after;
    store.tick(later).unwrap();
    let leaf = store.leaf_for_name("deb.example.test", later).unwrap();
    assert_ne!(leaf.ca_id(), &old_container[0].id);
    verify_with_bundle(&store.cas_valid_at(later), &leaf, later).unwrap();
}

#[test]
fn a_domain_removed_gets_no_leaf_and_the_names_kept_stay_with_the_older_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &["example.test", "pkg.example"], t0());
    let old_container = bundle_for_new_container(&store, t0());
    drop(store);

    let now = t0() + hours(1);
    let store = open(dir.path(), &["example.test"], now);
    let new_container = bundle_for_new_container(&store, now);
    let new = store.current_for_new_container(now).unwrap();
    assert!(!old_container.iter().any(|ca| ca.id == new.id));
    assert_eq!(store.get(&new.id).unwrap().domains(), ["example.test"]);

    // The old generation still permits the removed domain, but it is no longer cached.
    let err = store.leaf_for_name("files.pkg.example", now).unwrap_err();
    assert!(matches!(err, Error::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("files.pkg.example"), "{err}");

    // The name kept: the old generation, held by both containers.
    let leaf = store.leaf_for_name("deb.example.test", now).unwrap();
    assert_eq!(leaf.ca_id(), &old_container[0].id);
    verify_with_bundle(&old_container, &leaf, now).unwrap();
    verify_with_bundle(&new_container, &leaf, now).unwrap();
}

#[test]
fn the_signer_for_a_name_is_refused_for_non_names_and_without_a_valid_generation() {
    let (_dir, store) = store(t0());
    let err = store.signer_for("10.0.0.1", t0()).unwrap_err();
    assert!(matches!(err, Error::InvalidHost { .. }), "{err}");
    // Long after the last tick: nothing valid permits the name.
    let late = t0() + hours(48);
    let err = store.signer_for("example.test", late).unwrap_err();
    assert!(matches!(err, Error::NoCaPermits { .. }), "{err}");
    store.tick(late).unwrap();
    let leaf = store.leaf_for_name("example.test", late).unwrap();
    verify_with_bundle(&store.cas_valid_at(late), &leaf, late).unwrap();
}

/// A container as the simulation tracks it.
struct Container {
    created: time::OffsetDateTime,
    bundle: Vec<CaCert>,
    /// The domains configured at its creation (its extra hosts).
    given: Vec<&'static str>,
}

#[test]
fn every_container_verifies_its_names_across_domain_changes_rotations_and_restarts() {
    // Restarts every 7 hours, each with the next domain set: one added, one removed, a
    // removed one added again, two added; generations rotate every ~20 h 50 in between.
    let sets: [&[&'static str]; 5] = [
        &["example.test", "pkg.example"],
        &["example.test", "pkg.example", "added.test"],
        &["example.test", "added.test"],
        &["pkg.example", "added.test"],
        &["example.test", "pkg.example", "added.test", "more.test"],
    ];
    let max_job = hours(3);
    let dir = tempfile::tempdir().unwrap();
    let mut set = 0;
    let mut store = open(dir.path(), sets[set], t0());
    let mut containers: Vec<Container> = Vec::new();
    let mut checked = 0;
    let mut new_name_checked = 0;
    let mut refused = 0;

    let step = minutes(20);
    let mut now = t0();
    while now < t0() + hours(84) {
        if now > t0() && (now - t0()).whole_minutes() % (7 * 60) == 0 {
            set = (set + 1) % sets.len();
            drop(store);
            store = open(dir.path(), sets[set], now);
        }
        store.tick(now).unwrap();
        containers.push(Container {
            created: now,
            bundle: bundle_for_new_container(&store, now),
            given: sets[set].to_vec(),
        });

        for c in containers.iter().filter(|c| now <= c.created + max_job) {
            for domain in &c.given {
                let host = format!("deb.{domain}");
                if !sets[set].contains(domain) {
                    // Removed since the container was created: no longer served.
                    let err = store.leaf_for_name(&host, now).unwrap_err();
                    assert!(matches!(err, Error::NotCached { .. }), "{err}");
                    refused += 1;
                    continue;
                }
                let leaf = store.leaf_for_name(&host, now).unwrap();
                verify_with_bundle(&c.bundle, &leaf, now).unwrap_or_else(|e| {
                    panic!(
                        "{host} for the container created {}, now {now}, signed by {}: {e}",
                        c.created,
                        leaf.ca_id()
                    )
                });
                checked += 1;
                if c.created == now && domain == &"more.test" {
                    new_name_checked += 1;
                }
            }
        }
        now += step;
    }
    assert!(checked > 1000, "only {checked} leaves checked");
    assert!(new_name_checked > 0, "a newly added domain was checked");
    assert!(refused > 0, "a removed domain was asked for");
}

#[test]
fn a_domain_added_while_running_reaches_containers_created_after_and_old_names_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &["example.test"], t0());
    let old_container = bundle_for_new_container(&store, t0());

    let now = t0() + hours(1);
    let new = store
        .add_domains(&["Learned.Test."], now)
        .unwrap()
        .expect("a new generation for the grown set");
    assert_eq!(store.domains().as_slice(), ["example.test", "learned.test"]);
    assert_eq!(
        store.get(&new.id).unwrap().domains(),
        ["example.test", "learned.test"]
    );
    // Nothing new (a name cached already, or under a cached domain): no new
    // generation.
    assert!(store.add_domains(&["learned.test"], now).unwrap().is_none());
    assert!(store
        .add_domains(&["a.example.test"], now)
        .unwrap()
        .is_none());

    let new_container = bundle_for_new_container(&store, now);
    assert_eq!(store.current_for_new_container(now).unwrap().id, new.id);
    let leaf = store.leaf_for_name("pkgs.learned.test", now).unwrap();
    assert_eq!(leaf.ca_id(), &new.id);
    verify_with_bundle(&new_container, &leaf, now).unwrap();
    assert!(verify_with_bundle(&old_container, &leaf, now).is_err());
    // The configured name keeps its older signer, which both hold.
    let leaf = store.leaf_for_name("deb.example.test", now).unwrap();
    assert_eq!(leaf.ca_id(), &old_container[0].id);
    verify_with_bundle(&old_container, &leaf, now).unwrap();
    verify_with_bundle(&new_container, &leaf, now).unwrap();

    // An invalid name is refused and changes nothing.
    assert!(store.add_domains(&["*.wild.test"], now).is_err());
    assert_eq!(store.domains().len(), 2);
}
