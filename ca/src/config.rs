//! Typed configuration of the CA store: which domains the CA may vouch for, which key
//! algorithm, how long a CA lives and how long a CI job may run.
//!
//! The file format and its parsing live in the `cistern` crate; this is the validated
//! result. [`CaConfig::new`] fills in the defaults, [`CaConfig::validate`] checks the
//! relations the rotation rule depends on (see [`crate::store`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::name;

/// Key algorithm of the CA (leaves always use ECDSA P-256, the most widely accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519. Fine for curl and Go clients; some older TLS stacks do not accept it.
    Ed25519,
}

impl KeyAlgorithm {
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    pub(crate) fn from_rcgen(alg: &rcgen::SignatureAlgorithm) -> Option<Self> {
        [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
        ]
        .into_iter()
        .find(|a| a.rcgen() == alg)
    }
}

/// Default CA lifetime: one day.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Default longest CI job: three hours.
pub const DEFAULT_MAX_JOB_DURATION: Duration = Duration::from_secs(3 * 60 * 60);
/// Default extra time a handed-out CA must outlive the longest job by: ten minutes.
pub const DEFAULT_ROTATION_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Validated settings of a [`crate::CaStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaConfig {
    /// Directory holding `<id>.crt.pem` and `<id>.key.pem` per CA generation (created 0700).
    pub state_dir: PathBuf,
    /// Cached domains: each permits itself and its subdomains (normalised, sorted, unique).
    pub domains: Vec<String>,
    /// Key algorithm of new CA generations.
    pub algorithm: KeyAlgorithm,
    /// How long each CA generation is valid.
    pub lifetime: Duration,
    /// Longest a CI job (container) may run; a CA handed out must outlive it.
    pub max_job_duration: Duration,
    /// Slack added to `max_job_duration` when deciding to rotate.
    pub rotation_margin: Duration,
    /// Upper bound of a leaf's lifetime (a leaf never outlives its CA either).
    pub leaf_lifetime: Duration,
}

impl CaConfig {
    /// A configuration with the defaults (P-256, 24 h CA lifetime, 3 h jobs, 10 min margin,
    /// leaves bounded by their CA) for `domains`, validated.
    pub fn new<I, S>(state_dir: impl Into<PathBuf>, domains: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let config = CaConfig {
            state_dir: state_dir.into(),
            domains: domains.into_iter().map(|d| d.as_ref().to_owned()).collect(),
            algorithm: KeyAlgorithm::default(),
            lifetime: DEFAULT_LIFETIME,
            max_job_duration: DEFAULT_MAX_JOB_DURATION,
            rotation_margin: DEFAULT_ROTATION_MARGIN,
            leaf_lifetime: DEFAULT_LIFETIME,
        };
        config.validate()
    }

    /// Sets the CA key algorithm.
    pub fn with_algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the CA lifetime, longest job duration and rotation margin; call
    /// [`CaConfig::validate`] afterwards.
    pub fn with_durations(
        mut self,
        lifetime: Duration,
        max_job_duration: Duration,
        rotation_margin: Duration,
    ) -> Self {
        self.lifetime = lifetime;
        self.max_job_duration = max_job_duration;
        self.rotation_margin = rotation_margin;
        self
    }

    /// Sets the upper bound of a leaf's lifetime.
    pub fn with_leaf_lifetime(mut self, leaf_lifetime: Duration) -> Self {
        self.leaf_lifetime = leaf_lifetime;
        self
    }

    /// Normalises the domains (none is allowed: no generation is made until one is added,
    /// see [`crate::CaStore::add_domains`]) and checks the durations:
    /// `max_job_duration + rotation_margin < lifetime`, so every CA generation is the
    /// current one for a while; and all durations are at least one second (X.509 times
    /// have second precision).
    pub fn validate(mut self) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidConfig {
            reason: reason.to_owned(),
        };
        let mut domains = self
            .domains
            .iter()
            .map(|d| name::domain(d))
            .collect::<Result<Vec<_>>>()?;
        domains.sort();
        domains.dedup();
        // An empty set is allowed (every domain is to be learned while running), but no
        // generation is made for it: an empty permitted set would make rcgen omit the name
        // constraints extension, which yields an unconstrained CA. Never.
        self.domains = domains;
        let one_second = Duration::from_secs(1);
        if self.lifetime < one_second
            || self.max_job_duration < one_second
            || self.leaf_lifetime < one_second
        {
            return Err(invalid("durations must be at least one second"));
        }
        if self.max_job_duration.saturating_add(self.rotation_margin) >= self.lifetime {
            return Err(invalid(
                "max_job_duration plus rotation_margin must be shorter than the CA lifetime",
            ));
        }
        Ok(self)
    }

    /// How much validity a CA must have left to be handed to a new container.
    pub(crate) fn required_remaining(&self) -> Duration {
        self.max_job_duration + self.rotation_margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_p256_one_day_three_hours() {
        let c = CaConfig::new("/tmp/x", ["Example.test", "example.test", "b.test"]).unwrap();
        assert_eq!(c.algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(c.lifetime, Duration::from_secs(86_400));
        assert_eq!(c.max_job_duration, Duration::from_secs(3 * 3600));
        assert_eq!(c.domains, vec!["b.test", "example.test"]);
    }

    #[test]
    fn job_longer_than_lifetime_is_refused() {
        let c = CaConfig::new("/tmp/x", ["example.test"]).unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        let err = c
            .clone()
            .with_durations(h(3), h(3), Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(c
            .with_durations(h(3), h(2), Duration::from_secs(3599))
            .validate()
            .is_ok());
    }

    #[test]
    fn no_domains_is_a_valid_configuration() {
        // (No generation is made for it: see the store's tests.)
        assert!(CaConfig::new("/tmp/x", Vec::<String>::new()).is_ok());
    }

    #[test]
    fn wildcard_domain_is_refused() {
        let err = CaConfig::new("/tmp/x", ["*.example.test"]).unwrap_err();
        assert!(matches!(err, Error::InvalidDomain { .. }), "{err}");
    }
}
