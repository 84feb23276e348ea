//! What a TLS client inside a CI container sees: leaves verify against the CA it was handed,
//! for the cached domains and nothing else.

mod support;

use std::fs;

use cistern_ca::{CaId, Error};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use support::*;

#[test]
fn leaf_for_a_cached_domain_verifies_against_the_handed_out_ca() {
    let (_dir, store) = store(t0());
    let ca = store.current_for_new_container(t0()).unwrap();
    for host in [
        "example.test",
        "deb.example.test",
        "a.b.pkg.example",
        "Deb.Example.Test.",
    ] {
        let leaf = store.issue_leaf(&ca.id, host, t0()).unwrap();
        assert_eq!(leaf.ca_id(), &ca.id);
        assert_eq!(leaf.cert_chain().len(), 2);
        assert_eq!(leaf.cert_chain()[1], ca.der);
        verify(&ca, &leaf, t0()).unwrap_or_else(|e| panic!("{host}: {e}"));
        verify(&ca, &leaf, t0() + hours(23)).unwrap();
    }
}

#[test]
fn leaf_for_a_name_outside_the_cached_domains_is_refused() {
    let (_dir, store) = store(t0());
    let ca = store.current_for_new_container(t0()).unwrap();
    for host in [
        "evil.test",
        "badexample.test",
        "example.test.evil",
        "pkg.example2",
    ] {
        let err = store.issue_leaf(&ca.id, host, t0()).unwrap_err();
        assert!(matches!(err, Error::NotPermitted { .. }), "{host}: {err}");
    }
    let err = store.issue_leaf(&ca.id, "192.0.2.1", t0()).unwrap_err();
    assert!(matches!(err, Error::InvalidHost { .. }), "{err}");
}

#[test]
fn leaf_is_not_trusted_by_a_client_holding_another_ca() {
    let (_dir, store) = store(t0());
    let old = store.current_for_new_container(t0()).unwrap();
    let new = store.rotate(t0() + hours(1)).unwrap();
    let leaf = store
        .issue_leaf(&new.id, "example.test", t0() + hours(1))
        .unwrap();
    verify(&new, &leaf, t0() + hours(1)).unwrap();
    assert!(verify(&old, &leaf, t0() + hours(1)).is_err());
}

#[test]
fn leaf_does_not_verify_after_its_ca_expired() {
    let (_dir, store) = store(t0());
    let ca = store.current_for_new_container(t0()).unwrap();
    let leaf = store.issue_leaf(&ca.id, "example.test", t0()).unwrap();
    let err = verify(&ca, &leaf, ca.not_after + minutes(1)).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

/// Signs a leaf for `host` by hand with the CA key read from the state directory, bypassing
/// cistern's own issuance checks.
fn hand_made_leaf(dir: &std::path::Path, id: &CaId, host: &str) -> Vec<CertificateDer<'static>> {
    let cert_pem = fs::read_to_string(dir.join(format!("{id}.crt.pem"))).unwrap();
    let key_pem = fs::read_to_string(dir.join(format!("{id}.key.pem"))).unwrap();
    let ca_key = KeyPair::from_pem(&key_pem).unwrap();
    let issuer = CertificateParams::from_ca_cert_pem(&cert_pem)
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.not_before = t0() - hours(1);
    params.not_after = t0() + hours(1);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &issuer, &ca_key).unwrap();
    let ca_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    vec![leaf.der().clone(), ca_der]
}

#[test]
fn name_constraints_in_the_ca_make_clients_reject_leaves_for_other_names() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    let store = cistern_ca::CaStore::open(config(&state), t0()).unwrap();
    let ca = store.current_for_new_container(t0()).unwrap();

    // Control: the same hand-made recipe inside the constraints is accepted...
    let inside = hand_made_leaf(&state, &ca.id, "mirror.example.test");
    verify_chain(&ca.der, &inside, "mirror.example.test", t0()).unwrap();

    // ...and outside them the client refuses it, even though the CA key signed it.
    for host in ["evil.test", "example.test.evil.test", "badexample.test"] {
        let outside = hand_made_leaf(&state, &ca.id, host);
        let err = verify_chain(&ca.der, &outside, host, t0()).unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("NameConstraint") || text.contains("name constraint"),
            "{host}: unexpected error {text}"
        );
    }
}
