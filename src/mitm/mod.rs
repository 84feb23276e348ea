//! Transparent caching: the configuration shared by the caching proxy and by
//! the injection of cache routing and trust into containers, the CA store
//! both use, and the caching proxy itself.
//!
//! The proxy, one concept per module (each imports only those below it):
//! - [`commands`]: `cistern cache …` and `cistern ca …`;
//! - [`proxy`]: binds the HTTP/HTTPS listeners and starts them on the
//!   serve layer ([`crate::listen::serve`]);
//! - [`forward`]: the optional explicit forward proxy (CONNECT, absolute
//!   URLs) in front of the same handler;
//! - [`listeners`]: what the HTTP and HTTPS listeners serve: caps
//!   per client address ([`crate::listen::limit`]), `sendfile` on plain
//!   connections, the handler;
//! - [`handler`]: one request through the cache state machine;
//! - [`address`]: where it listens by default (the address containers
//!   reach the host at, never every address);
//! - `tee`: a miss streamed to the client and into the cache at once;
//! - [`shared`]: the shared cache tier's credentials and trust roots;
//! - [`upstream`]: the origin client (system resolver + overrides, system
//!   roots + extra roots, pooled);
//! - [`body`]: the body a client is sent, counted, and the per-request log
//!   event;
//! - [`tls`]: TLS termination, leaf per SNI, *which CA signs* (read its doc);
//! - [`conn`]: what the handler knows of a client connection;
//! - [`domains`]: which hosts are served (configured domains only);
//! - [`plain`]: plain-TCP client connections, which send checked hits
//!   from the page cache with `sendfile`;
//! - [`metrics`]: per-domain counters and origin latencies (the admin
//!   listener, [`crate::admin`], serves them);
//! - [`error`]: start-up and request-path errors.
//!
//! The body type, the hop-by-hop stripper and the error-chain formatter
//! are shared with the Docker side ([`crate::http`]).

pub mod address;
pub mod body;
pub mod commands;
pub mod config;
pub mod conn;
pub mod domains;
pub mod error;
pub mod forward;
pub mod handler;
pub mod handout;
pub mod learn;
pub mod listeners;
pub mod metrics;
pub mod plain;
pub mod proxy;
pub mod shared;
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
    /// The cached domains now (they grow as hosts are learned).
    pub set: Arc<learn::CachedSet>,
}

impl Caching {
    /// Opens (or creates) the CA store in the state directory, for the
    /// domains of `config` (with what [`CachingConfig::learn_at_start`]
    /// added).
    pub fn open(config: CachingConfig) -> Result<Caching, cistern_ca::Error> {
        let ca = Arc::new(CaStore::open(
            config.ca_config()?,
            time::OffsetDateTime::now_utc(),
        )?);
        let set = Arc::new(learn::CachedSet::new(&config, ca.clone()));
        Ok(Caching { config, ca, set })
    }
}
