//! The state directory: permissions, restarts, cleanup, and no key material in output.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use cistern_ca::CaStore;
use support::*;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_files_are_0600_and_the_state_dir_0700() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("ca");
    let store = CaStore::open(config(&state), t0()).unwrap();
    let a = store.current_for_new_container(t0()).unwrap();
    let b = store.rotate(t0() + hours(1)).unwrap();
    assert_eq!(mode(&state), 0o700);
    for id in [&a.id, &b.id] {
        assert_eq!(mode(&state.join(format!("{id}.key.pem"))), 0o600);
        let cert = fs::read_to_string(state.join(format!("{id}.crt.pem"))).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    }
    let leftovers: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn reopening_the_state_dir_gives_the_same_cas() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::open(config(dir.path()), t0()).unwrap();
    let a = store.current_for_new_container(t0()).unwrap();
    let b = store.rotate(t0() + hours(2)).unwrap();
    let before = store.cas_valid_at(t0() + hours(3));
    drop(store);

    let now = t0() + hours(3);
    let store = CaStore::open(config(dir.path()), now).unwrap();
    assert_eq!(store.cas_valid_at(now), before);
    assert_eq!(store.current_for_new_container(now).unwrap(), b);
    // A container created before the restart keeps getting leaves its CA vouches for.
    let leaf = store
        .leaf_for_client(Some(&a.id), "deb.example.test", now)
        .unwrap();
    assert_eq!(leaf.ca_id(), &a.id);
    verify(&a, &leaf, now).unwrap();
}

#[test]
fn a_generation_stored_by_another_process_is_adopted_at_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let running = CaStore::open(config(dir.path()), t0()).unwrap();
    let before = running.current_for_new_container(t0()).unwrap();
    // `cistern ca rotate` opens the same directory in its own process.
    let forced = CaStore::open(config(dir.path()), t0() + minutes(5))
        .unwrap()
        .rotate(t0() + minutes(5))
        .unwrap();
    assert_eq!(
        running
            .current_for_new_container(t0() + minutes(6))
            .unwrap(),
        before
    );
    let report = running.tick(t0() + minutes(6)).unwrap();
    assert_eq!(report.adopted, vec![forced.id.clone()]);
    assert_eq!(
        running
            .current_for_new_container(t0() + minutes(6))
            .unwrap(),
        forced
    );
    // The older generation still signs for the containers that hold it.
    assert!(running.get(&before.id).is_some());
    assert!(running.tick(t0() + minutes(7)).unwrap().adopted.is_empty());
}

#[test]
fn expired_generations_are_removed_when_opening() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::open(config(dir.path()), t0()).unwrap();
    let old = store.current_for_new_container(t0()).unwrap();
    drop(store);

    let now = old.not_after + hours(1);
    let store = CaStore::open(config(dir.path()), now).unwrap();
    assert!(store.get(&old.id).is_none());
    assert!(!dir.path().join(format!("{}.key.pem", old.id)).exists());
    assert!(!dir.path().join(format!("{}.crt.pem", old.id)).exists());
    assert_eq!(store.cas_valid_at(now).len(), 1);
}

#[test]
fn broken_and_half_written_files_are_cleaned_up_when_opening() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::open(config(dir.path()), t0()).unwrap();
    let good = store.current_for_new_container(t0()).unwrap();
    drop(store);

    let p = |name: &str| dir.path().join(name);
    fs::write(p("aaaaaaaaaaaaaaaa.crt.pem"), "not a certificate").unwrap();
    fs::write(p("aaaaaaaaaaaaaaaa.key.pem"), "not a key").unwrap();
    fs::write(p("bbbbbbbbbbbbbbbb.key.pem"), "orphan key").unwrap();
    fs::write(p(".tmp-cccccccccccccccc.key.pem"), "half written").unwrap();
    // A valid pair stored under the wrong name is refused too.
    fs::copy(
        p(&format!("{}.crt.pem", good.id)),
        p("dddddddddddddddd.crt.pem"),
    )
    .unwrap();
    fs::copy(
        p(&format!("{}.key.pem", good.id)),
        p("dddddddddddddddd.key.pem"),
    )
    .unwrap();
    fs::write(p("README"), "not ours").unwrap();

    let store = CaStore::open(config(dir.path()), t0() + hours(1)).unwrap();
    assert_eq!(
        store.current_for_new_container(t0() + hours(1)).unwrap(),
        good
    );
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![
        "README".to_owned(),
        format!("{}.crt.pem", good.id),
        format!("{}.key.pem", good.id),
    ];
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn debug_and_errors_show_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::open(config(dir.path()), t0()).unwrap();
    let ca = store.current_for_new_container(t0()).unwrap();
    let key_pem = fs::read_to_string(dir.path().join(format!("{}.key.pem", ca.id))).unwrap();
    let body = pem_body(&key_pem);
    let leaf = store.issue_leaf(&ca.id, "example.test", t0()).unwrap();
    let leaf_key = format!("{:?}", leaf.private_key().secret_der());

    let outputs = [
        format!("{store:?}"),
        format!("{:?}", store.get(&ca.id).unwrap()),
        format!("{leaf:?}"),
        format!("{:?}", leaf.private_key()),
        format!(
            "{:?}",
            store.issue_leaf(&ca.id, "evil.test", t0()).unwrap_err()
        ),
        store
            .issue_leaf(&ca.id, "evil.test", t0())
            .unwrap_err()
            .to_string(),
    ];
    for out in outputs {
        assert!(!out.contains(&body[..32]), "CA key in {out}");
        assert!(!out.contains("PRIVATE KEY"), "key PEM in {out}");
        assert!(!out.contains(&leaf_key[1..40]), "leaf key in {out}");
    }
}
