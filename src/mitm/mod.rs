//! Transparent caching: the configuration shared by the caching proxy and by
//! the injection of cache routing and trust into containers, and the CA store
//! both use.

pub mod config;

use std::sync::Arc;

use cistern_ca::CaStore;

pub use config::{CachingConfig, RawCaching};

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
