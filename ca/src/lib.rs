//! `cistern-ca`: the short-lived, name-constrained certificate authority behind cistern's
//! caching proxy.
//!
//! cistern intercepts TLS to configured package-repository domains so it can cache them.
//! CI containers trust a CA that cistern gives them at creation time; this crate makes that
//! CA as harmless as possible: it lives a day, it is constrained (critical X.509 name
//! constraints) to the cached domains, and its key never leaves the state directory.
//!
//! Layout, one concept per module:
//! - [`config`]: validated settings ([`CaConfig`], [`KeyAlgorithm`]).
//! - [`authority`]: one CA generation ([`CertificateAuthority`], [`CaId`], [`CaCert`]) and
//!   issuing a leaf with it.
//! - [`leaf`]: [`Leaf`] (what rustls needs) and the leaf cache with its reuse rule.
//! - [`store`]: [`CaStore`], the rotating set of generations; its module doc is the
//!   rotation design.
//! - `persist`: the state directory (atomic writes, 0600 keys, cleanup on load).
//! - `name`: DNS name normalisation and the subtree match of name constraints.
//! - [`error`]: the crate's one error type, [`Error`].
//!
//! All functions that depend on time take `now`; nothing here reads the clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authority;
pub mod config;
pub mod error;
pub mod leaf;
mod name;
mod persist;
pub mod store;

pub use authority::{CaCert, CaId, CertificateAuthority};
pub use config::{CaConfig, KeyAlgorithm};
pub use error::{Error, Result};
pub use leaf::Leaf;
pub use store::{CaStore, TickReport};

/// A cached domain as a CA generation's name constraints hold it (lower
/// case, no root dot), or why it cannot be one: what [`CaConfig`] and
/// [`CaStore::add_domains`] accept.
pub fn domain_name(domain: &str) -> Result<String> {
    name::domain(domain)
}
