//! Leaf certificates for the caching proxy's TLS server side, and their in-memory cache.
//!
//! A [`Leaf`] is what rustls needs for one SNI name: the chain (leaf, then its CA) and the
//! key, both as [`rustls::pki_types`] values and ready-made as an
//! `Arc<rustls::sign::CertifiedKey>` for a `ResolvesServerCert`.
//!
//! Cache rule: leaves are kept per (CA id, host) and reused while `now` is inside their
//! validity and more than the *refresh margin* is left, where the refresh margin is the
//! smaller of 10 % of the leaf's lifetime and 5 minutes. A leaf that ends together with its
//! CA is reused until the CA expires, since a new one could not last longer. The cache holds
//! at most [`MAX_CACHED_LEAVES`] entries; when full, stale entries are dropped first and, if
//! that is not enough, the whole cache (issuing again is cheap).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::CaId;

/// Most leaves kept in memory at once.
pub const MAX_CACHED_LEAVES: usize = 10_000;
/// Upper bound of the refresh margin.
const MAX_REFRESH_MARGIN: time::Duration = time::Duration::minutes(5);

/// A leaf certificate for one host, signed by one CA generation. `Debug` redacts the key.
pub struct Leaf {
    ca_id: CaId,
    host: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key: PrivatePkcs8KeyDer<'static>,
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("ca_id", &self.ca_id)
            .field("host", &self.host)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Leaf {
    pub(crate) fn new(
        ca_id: CaId,
        host: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        key: PrivatePkcs8KeyDer<'static>,
        certified: Arc<CertifiedKey>,
    ) -> Self {
        Leaf {
            ca_id,
            host,
            not_before,
            not_after,
            key,
            certified,
        }
    }

    /// The CA generation that signed this leaf.
    pub fn ca_id(&self) -> &CaId {
        &self.ca_id
    }

    /// The (normalised) host name in the SAN.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity (never after the CA's).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The chain to send: the leaf, then the CA certificate.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// A copy of the leaf's private key (PKCS#8), e.g. for `with_single_cert`.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// Chain and signing key as rustls's server resolver wants them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// Whether the cache may hand this leaf out at `now` (see the module doc).
    pub(crate) fn is_fresh(&self, now: OffsetDateTime, ca_not_after: OffsetDateTime) -> bool {
        if now < self.not_before || now >= self.not_after {
            return false;
        }
        if self.not_after >= ca_not_after {
            return true;
        }
        let lifetime: time::Duration = self.not_after - self.not_before;
        let margin = (lifetime / 10_i32).min(MAX_REFRESH_MARGIN);
        now < self.not_after - margin
    }
}

/// Leaves by (CA id, host).
#[derive(Default)]
pub(crate) struct LeafCache {
    leaves: HashMap<(CaId, String), Arc<Leaf>>,
}

impl LeafCache {
    /// A fresh cached leaf, if any.
    pub(crate) fn get(
        &self,
        ca: &CaId,
        host: &str,
        now: OffsetDateTime,
        ca_not_after: OffsetDateTime,
    ) -> Option<Arc<Leaf>> {
        // The key is owned; building it costs one small allocation per lookup.
        let leaf = self.leaves.get(&(ca.clone(), host.to_owned()))?;
        leaf.is_fresh(now, ca_not_after).then(|| Arc::clone(leaf))
    }

    /// Stores `leaf`, making room first if the cache is full.
    pub(crate) fn insert(&mut self, leaf: Arc<Leaf>, now: OffsetDateTime) {
        if self.leaves.len() >= MAX_CACHED_LEAVES {
            self.leaves
                .retain(|_, l| now >= l.not_before && now < l.not_after);
            if self.leaves.len() >= MAX_CACHED_LEAVES {
                self.leaves.clear();
            }
        }
        self.leaves
            .insert((leaf.ca_id.clone(), leaf.host.clone()), leaf);
    }

    /// Drops leaves of CAs not in `live` and leaves that have expired.
    pub(crate) fn retain(&mut self, live: impl Fn(&CaId) -> bool, now: OffsetDateTime) {
        self.leaves
            .retain(|(ca, _), l| live(ca) && now < l.not_after);
    }

    pub(crate) fn len(&self) -> usize {
        self.leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::authority::CertificateAuthority;
    use crate::config::KeyAlgorithm;

    #[test]
    fn leaf_is_refreshed_within_the_margin_unless_it_ends_with_its_ca() {
        let t0 = time::macros::datetime!(2030-01-01 00:00 UTC);
        let ca = CertificateAuthority::generate(
            KeyAlgorithm::EcdsaP256,
            &["example.test".to_owned()],
            Duration::from_secs(86_400),
            t0,
        )
        .unwrap();
        // One-hour leaf issued at t0 + 1h: lifetime 1h05 (backdated 5 min), margin 5 min.
        let t1 = t0 + time::Duration::hours(1);
        let leaf = ca
            .issue("example.test", Duration::from_secs(3600), t1)
            .unwrap();
        let end = leaf.not_after();
        assert!(leaf.is_fresh(t1, ca.not_after()));
        assert!(leaf.is_fresh(end - time::Duration::minutes(6), ca.not_after()));
        assert!(!leaf.is_fresh(end - time::Duration::minutes(4), ca.not_after()));
        assert!(!leaf.is_fresh(end, ca.not_after()));

        // A leaf bounded by its CA stays fresh to the CA's last second.
        let late = ca.not_after() - time::Duration::minutes(1);
        let leaf = ca
            .issue("example.test", Duration::from_secs(86_400), late)
            .unwrap();
        assert_eq!(leaf.not_after(), ca.not_after());
        assert!(leaf.is_fresh(ca.not_after() - time::Duration::seconds(1), ca.not_after()));
    }
}
