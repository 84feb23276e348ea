//! The one error type of `cistern-ca`.
//!
//! Every variant names the thing that failed (a path, a host, a CA id) and never carries key
//! material: key bytes stay inside [`crate::CertificateAuthority`] and [`crate::Leaf`], whose
//! `Debug` output is redacted.

use std::path::PathBuf;

use time::OffsetDateTime;

use crate::CaId;

/// What can go wrong while configuring, loading, rotating or using the cistern CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CA configuration is unusable (for example `max_job_duration` is not shorter than
    /// the CA lifetime, or no domain is configured).
    #[error("invalid CA configuration: {reason}")]
    InvalidConfig {
        /// Why the configuration was refused.
        reason: String,
    },

    /// A configured cached domain is not a plain DNS name.
    #[error("invalid cached domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The domain as configured.
        domain: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A leaf was requested for something that is not a DNS name (an IP address, an empty
    /// or malformed name).
    #[error("cannot issue a certificate for {host:?}: {reason}")]
    InvalidHost {
        /// The host name as requested.
        host: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A leaf was requested for a host outside the CA's name constraints, so clients would
    /// reject it anyway.
    #[error("host {host:?} is outside the domains permitted by CA {ca}")]
    NotPermitted {
        /// The (normalised) host name.
        host: String,
        /// The CA that was asked to sign.
        ca: CaId,
    },

    /// A leaf was requested for a host outside the configured cached domains (for example
    /// one that was removed from the configuration): no generation signs it, even one whose
    /// name constraints still permit it.
    #[error("host {host:?} is not in the cached domains")]
    NotCached {
        /// The (normalised) host name.
        host: String,
    },

    /// No generation valid at the given time permits the host (normally the maintenance tick
    /// has created one with the configured domains; it was missed).
    #[error("no CA valid at {now} permits host {host:?}")]
    NoCaPermits {
        /// The (normalised) host name.
        host: String,
        /// The time asked about.
        now: OffsetDateTime,
    },

    /// A string is not a CA id (16 lowercase hex digits).
    #[error("{value:?} is not a cistern CA id")]
    InvalidCaId {
        /// The rejected value.
        value: String,
    },

    /// No CA generation with that id is held (never existed, or expired and was dropped).
    #[error("unknown CA {id}")]
    UnknownCa {
        /// The requested id.
        id: CaId,
    },

    /// The CA exists but is not valid at the given time.
    #[error("CA {id} is not valid at {now} (valid {not_before} .. {not_after})")]
    CaNotValid {
        /// The CA id.
        id: CaId,
        /// The time asked about.
        now: OffsetDateTime,
        /// Start of the CA's validity.
        not_before: OffsetDateTime,
        /// End of the CA's validity.
        not_after: OffsetDateTime,
    },

    /// No CA generation is valid at the given time.
    #[error("no valid CA at {now}")]
    NoValidCa {
        /// The time asked about.
        now: OffsetDateTime,
    },

    /// Certificate or key generation failed inside rcgen.
    #[error("certificate generation failed while {what}")]
    Generate {
        /// What was being built.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },

    /// rustls refused a generated key or certificate.
    #[error("rustls refused the {what}")]
    Rustls {
        /// What was handed to rustls.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rustls::Error,
    },

    /// A file system operation on the state directory failed.
    #[error("{op} {path}")]
    Io {
        /// The operation, e.g. "writing".
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Error::Generate { what, source }
    }

    pub(crate) fn rustls(what: &'static str) -> impl FnOnce(rustls::Error) -> Self {
        move |source| Error::Rustls { what, source }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
