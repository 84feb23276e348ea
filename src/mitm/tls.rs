//! TLS termination for the HTTPS listener: a leaf certificate per SNI name,
//! signed by cistern's CA, and ALPN for HTTP/2 and HTTP/1.1.
//!
//! # Which CA signs
//!
//! Containers are handed *every CA generation valid when they are created*
//! (the injection into containers does that), and the proxy signs with the
//! **oldest CA still valid** at handshake time (`cas_valid_at(now).last()`).
//! That CA is trusted by every container still running within
//! `max_job_duration`:
//!
//! - a container created at `t` received every generation valid at `t`,
//!   including its *current* one `C`, which by the hand-out rule is valid
//!   until at least `t + max_job_duration + margin`;
//! - at handshake time `s ≤ t + max_job_duration`, `C` is still valid, so
//!   the oldest generation valid at `s`, call it `O`, is `C` or older than
//!   `C` (generations are ordered by `not_before`);
//! - `O` is valid at `s` and started no later than `C`, which started no
//!   later than `t`; so `O` was already valid at `t` and is in the bundle
//!   the container was given.
//!
//! Signing with the newest CA instead would break containers created before
//! the last rotation. No per-connection bookkeeping (which container is
//! this?) is needed.
//!
//! Handshakes without SNI, or for a name outside the cached domains, get no
//! certificate and fail: the proxy is never an open proxy.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::domains::Domains;
use super::error::StartError;
use cistern_ca::CaStore;

/// Picks the leaf for a handshake's SNI name (see the module doc).
#[derive(Debug)]
pub struct LeafResolver {
    ca: Arc<CaStore>,
    domains: Domains,
}

impl LeafResolver {
    /// A resolver over the shared CA store.
    pub fn new(ca: Arc<CaStore>, domains: Domains) -> Self {
        LeafResolver { ca, domains }
    }

    /// The leaf for `sni` at `now`, signed by the oldest valid CA.
    pub fn leaf_for(&self, sni: &str, now: time::OffsetDateTime) -> Option<Arc<CertifiedKey>> {
        if self.domains.matching(sni).is_none() {
            tracing::info!(sni, "TLS handshake refused: not a cached domain");
            return None;
        }
        let signer = self.ca.cas_valid_at(now).pop()?;
        match self.ca.issue_leaf(&signer.id, sni, now) {
            Ok(leaf) => Some(leaf.certified_key()),
            Err(err) => {
                tracing::warn!(sni, ca = %signer.id, error = %err, "cannot issue a leaf");
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
