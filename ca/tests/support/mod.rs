//! Helpers shared by the integration tests: a store in a temporary directory, a fixed
//! clock, and a real rustls verifier that trusts exactly one CA.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cistern_ca::{CaCert, CaConfig, CaStore, Leaf};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;
use time::OffsetDateTime;

/// The cached domains every test store is constrained to.
pub const DOMAINS: [&str; 2] = ["example.test", "pkg.example"];

/// A fixed starting time.
pub fn t0() -> OffsetDateTime {
    time::macros::datetime!(2030-06-01 08:00:00 UTC)
}

pub fn hours(n: i64) -> time::Duration {
    time::Duration::hours(n)
}

pub fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

pub fn config(dir: &std::path::Path) -> CaConfig {
    CaConfig::new(dir, DOMAINS).expect("valid config")
}

/// A store with default settings in a fresh temporary directory.
pub fn store(now: OffsetDateTime) -> (tempfile::TempDir, CaStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CaStore::open(config(&dir.path().join("ca")), now).expect("open");
    (dir, store)
}

fn unix(now: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.unix_timestamp()).expect("after 1970"),
    ))
}

/// Verifies `chain` for `host` at `now` the way a TLS client trusting only `ca` would.
pub fn verify_chain(
    ca: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    host: &str,
    now: OffsetDateTime,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA accepted as trust anchor");
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], unix(now))
        .map(|_| ())
}

/// Verifies `chain` for `host` at `now` the way a TLS client trusting every CA of `bundle`
/// (what a container is given) would.
pub fn verify_with_bundle(
    bundle: &[CaCert],
    leaf: &Leaf,
    now: OffsetDateTime,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for ca in bundle {
        roots
            .add(ca.der.clone())
            .expect("CA accepted as trust anchor");
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let name = ServerName::try_from(leaf.host().to_owned()).expect("server name");
    let chain = leaf.cert_chain();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], unix(now))
        .map(|_| ())
}

/// Verifies a leaf against the CA a client was handed.
pub fn verify(ca: &CaCert, leaf: &Leaf, now: OffsetDateTime) -> Result<(), rustls::Error> {
    verify_chain(&ca.der, leaf.cert_chain(), leaf.host(), now)
}

/// The base64 body of a PEM file (what would leak if a key were printed).
pub fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}
