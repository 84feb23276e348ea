//! TLS termination for the HTTPS listener: a leaf certificate per SNI name,
//! signed by cistern's CA, and ALPN for HTTP/2 and HTTP/1.1.
//!
//! # Which CA signs
//!
//! Containers are handed *every CA generation valid when they are created*
//! (the injection into containers does that), and the proxy signs a leaf
//! for a name with the **oldest CA still valid at handshake time whose name
//! constraints permit that name** ([`CaStore::leaf_for_name`]). That CA is
//! one every container still within `max_job_duration` holds, for every
//! name it was given:
//!
//! - a container created at `t` received every generation valid at `t`,
//!   including its *current* one `C`, constrained to the domains configured
//!   at `t` and valid until at least `t + max_job_duration + margin`;
//! - at handshake time `s ≤ t + max_job_duration`, `C` is still valid and
//!   permits every name the container was given, so the signer `S` is `C`
//!   or older than `C` (generations are ordered by `not_before`);
//! - `S` is valid at `s` and started no later than `C`, which started no
//!   later than `t`; so `S` was already valid at `t` and is in the bundle
//!   the container was given.
//!
//! Signing with the newest CA instead would break containers created before
//! the last rotation; signing with the oldest valid CA whatever its
//! constraints would break a domain added to `caching.domains` until the
//! CAs from before the change expire. The choice depends on the name and the
//! time only: no per-connection bookkeeping (which container is this?), no
//! I/O per handshake. The full rule, with domain changes and restarts, is
//! the CA crate's rotation design ([`cistern_ca::store`]).
//!
//! Handshakes without SNI, or for a name outside the cached domains, get no
//! certificate and fail: the proxy is never an open proxy.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::error::StartError;
use super::learn::CachedSet;
use cistern_ca::CaStore;

/// Picks the leaf for a handshake's SNI name (see the module doc).
#[derive(Debug)]
pub struct LeafResolver {
    ca: Arc<CaStore>,
    domains: Arc<CachedSet>,
}

impl LeafResolver {
    /// A resolver over the shared CA store.
    pub fn new(ca: Arc<CaStore>, domains: Arc<CachedSet>) -> Self {
        LeafResolver { ca, domains }
    }

    /// The leaf for `sni` at `now`, signed by the oldest valid CA that
    /// permits it (see the module doc).
    pub fn leaf_for(&self, sni: &str, now: time::OffsetDateTime) -> Option<Arc<CertifiedKey>> {
        if self.domains.domains().matching(sni).is_none() {
            tracing::info!(sni, "TLS handshake refused: not a cached domain");
            return None;
        }
        match self.ca.leaf_for_name(sni, now) {
            Ok(leaf) => {
                tracing::debug!(sni, ca = %leaf.ca_id(), "leaf for the TLS handshake");
                Some(leaf.certified_key())
            }
            Err(err) => {
                tracing::warn!(sni, error = %err, "cannot issue a leaf");
                None
            }
        }
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            tracing::info!("TLS handshake refused: no SNI");
            return None;
        };
        self.leaf_for(sni, time::OffsetDateTime::now_utc())
    }
}

/// The HTTPS listener's rustls configuration (ring provider, TLS 1.2 and
/// 1.3, ALPN `h2` then `http/1.1`).
pub fn server_config(resolver: LeafResolver) -> Result<Arc<ServerConfig>, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cistern_ca::CaConfig;

    fn store(dir: &std::path::Path, domains: &[&str], now: time::OffsetDateTime) -> Arc<CaStore> {
        let config = CaConfig::new(dir, domains).unwrap();
        Arc::new(CaStore::open(config, now).unwrap())
    }

    /// The CA certificate a leaf's chain ends with.
    fn signer(leaf: &CertifiedKey) -> &[u8] {
        leaf.cert.last().unwrap().as_ref()
    }

    #[test]
    fn a_domain_added_at_a_restart_gets_a_leaf_from_the_ca_made_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = time::macros::datetime!(2030-06-01 08:00 UTC);
        let before = store(dir.path(), &["old.example"], t0);
        let old = before.current_for_new_container(t0).unwrap();
        drop(before);

        let now = t0 + time::Duration::hours(1);
        let domains = ["old.example", "new.example"];
        let ca = store(dir.path(), &domains, now);
        let new = ca.current_for_new_container(now).unwrap();
        assert_ne!(new.id, old.id);
        let config = serde_yaml::from_str::<crate::mitm::RawCaching>(&format!(
            "domains: [old.example, new.example]\nstate_dir: {}\n",
            dir.path().display()
        ))
        .unwrap()
        .validate()
        .unwrap();
        let set = Arc::new(CachedSet::new(&config, ca.clone()));
        let resolver = LeafResolver::new(ca, set);

        let leaf = resolver.leaf_for("deb.new.example", now).expect("a leaf");
        assert_eq!(signer(&leaf), new.der.as_ref());
        // A name both permit stays with the older CA, which containers
        // created before the restart hold.
        let leaf = resolver.leaf_for("deb.old.example", now).expect("a leaf");
        assert_eq!(signer(&leaf), old.der.as_ref());
        assert!(resolver.leaf_for("other.example", now).is_none());
    }
}
