//! Measures leaf issuance: a cold issuance (new key, signature, rustls key) and a cached
//! lookup, in microseconds per call.
//!
//! Run with `cargo run --release -p cistern-ca --example issue_bench [iterations]`.

use std::time::Instant;

use cistern_ca::{CaConfig, CaStore, KeyAlgorithm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("cistern-ca-bench-{}", std::process::id()));
    let now = time::OffsetDateTime::now_utc();

    for algorithm in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
    ] {
        let _ = std::fs::remove_dir_all(&dir);
        let config = CaConfig::new(&dir, ["example.test"])?.with_algorithm(algorithm);
        let store = CaStore::open(config, now)?;
        let ca = store.current_for_new_container(now)?;

        // Cold: a different host each time, so nothing is cached.
        let start = Instant::now();
        for i in 0..iterations {
            store.issue_leaf(&ca.id, &format!("h{i}.example.test"), now)?;
        }
        let cold = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);

        // Cached: the same host again.
        store.issue_leaf(&ca.id, "deb.example.test", now)?;
        let start = Instant::now();
        for _ in 0..iterations {
            store.issue_leaf(&ca.id, "deb.example.test", now)?;
        }
        let cached = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);

        let start = Instant::now();
        store.rotate(now)?;
        let rotate = start.elapsed().as_secs_f64() * 1e6;

        println!(
            "CA {algorithm:?}: cold issuance {cold:.1} µs, cached lookup {cached:.2} µs, \
             rotation (keygen + self-sign + 2 fsynced files) {rotate:.0} µs \
             ({iterations} iterations)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
