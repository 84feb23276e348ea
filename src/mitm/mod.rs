//! Transparent caching: the configuration shared by the caching proxy and by
//! the injection of cache routing and trust into containers, the CA store
//! both use, and the caching proxy itself.
//!
//! The proxy, one concept per module:
//! - [`proxy`]: binds the HTTP/HTTPS/admin listeners and runs them;
//! - [`address`]: where it listens by default (the address containers
//!   reach the host at, never every address);
//! - [`tls`]: TLS termination, leaf per SNI, *which CA signs* (read its doc);
//! - [`forward`]: the optional explicit forward proxy (CONNECT, absolute
//!   URLs) in front of the same handler;
//! - [`domains`]: which hosts are served (configured domains only);
//! - [`handler`]: one request through the cache state machine;
//! - [`upstream`]: the origin client (system resolver + overrides, system
//!   roots + extra roots, pooled);
//! - [`body`]: response bodies, teeing, the per-request log event;
//! - [`crate::listen::limit`]: how many connections one client address may
//!   hold (shared with the Docker listeners);
//! - [`plain`]: plain-TCP client connections, which send checked hits
//!   from the page cache with `sendfile`;
//! - [`metrics`]: per-domain counters and the Prometheus text;
//! - [`error`]: start-up and request-path errors;
//! - [`commands`]: `cistern cache …` and `cistern ca …`.

pub mod address;
pub mod body;
pub mod commands;
pub mod config;
pub mod domains;
pub mod error;
pub mod forward;
pub mod handler;
pub mod metrics;
pub mod plain;
pub mod proxy;
mod tee;
pub mod tls;
pub mod upstream;

use std::sync::Arc;

use cistern_ca::CaStore;

pub use config::{CachingConfig, RawCaching};
pub use error::StartError;

/// What the Docker side and the caching proxy share at run time.
#[derive(Debug)]
pub struct Caching {
    pub config: CachingConfig,
    pub ca: Arc<CaStore>,
}

impl Caching {
    /// Opens (or creates) the CA store in the state directory.
    pub fn open(config: CachingConfig) -> Result<Caching, cistern_ca::Error> {
        let ca = CaStore::open(config.ca_config()?, time::OffsetDateTime::now_utc())?;
        Ok(Caching {
            config,
            ca: Arc::new(ca),
        })
    }
}
