//! What the caching room hands the Docker side for injection into
//! containers: the cached domains and where they resolve, the environment,
//! the images to leave alone, what to do when injection fails, whether
//! builds get routing, and the CA certificates a new container is given.
//! Injection sees this view, not the caching configuration or the CA store.

use std::sync::Arc;

use cistern_ca::CaStore;
use time::OffsetDateTime;

pub use super::config::{InjectFailure, DEFAULT_CA_PATH as CA_PATH};
use super::learn::CachedSet;
use super::Caching;
use crate::discover::Found;

/// The caching room's view for injection ([`Caching::handout`]).
#[derive(Debug, Clone)]
pub struct Handout {
    /// The cached domains, pointed at the proxy in containers.
    set: Arc<CachedSet>,
    /// What they resolve to in containers (`host-gateway` or an IP).
    pub address: String,
    /// `NAME=value` entries added to every container's environment.
    pub env: Vec<String>,
    /// Image patterns whose containers get nothing.
    pub skip_images: Vec<String>,
    /// What happens to a create whose injection fails.
    pub on_failure: InjectFailure,
    /// Whether builds get the cached domains as extra hosts.
    pub builds: bool,
    /// Whether images are read for the repository hosts they name
    /// (`caching.discover.images`).
    pub learn_images: bool,
    ca: Arc<CaStore>,
}

/// One CA certificate handed to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedCa {
    pub id: String,
    /// RFC 3339.
    pub not_after: String,
    pub pem: String,
}

impl Caching {
    /// The view injection works from.
    pub fn handout(&self) -> Handout {
        let cfg = &self.config;
        Handout {
            set: self.set.clone(),
            address: cfg.inject_address.clone(),
            env: cfg.inject_env.clone(),
            skip_images: cfg.inject_skip_images.clone(),
            on_failure: cfg.inject_on_failure,
            builds: cfg.inject_builds,
            learn_images: cfg.discover.images,
            ca: self.ca.clone(),
        }
    }
}

impl Handout {
    /// The names containers are routed to the proxy for now: the cached
    /// domains, and the learned hosts under them.
    pub fn domains(&self) -> Vec<String> {
        let mut names: Vec<String> = self.set.domains().iter().map(str::to_owned).collect();
        names.extend(self.set.routed().iter().cloned());
        names
    }

    /// Caches the admitted hosts of `found` (see [`CachedSet::learn`]);
    /// returns those added.
    pub fn learn(&self, found: &[Found], now: OffsetDateTime) -> Vec<String> {
        self.set.learn(found, now)
    }

    /// The hand-out rule: make sure a CA outliving the job exists, then hand
    /// out every CA valid now, newest first.
    pub fn cas_for_new_container(&self, now: OffsetDateTime) -> Result<Vec<HandedCa>, String> {
        let current = self
            .ca
            .current_for_new_container(now)
            .map_err(|err| format!("no CA: {err}"))?;
        let mut certs = self.ca.cas_valid_at(now);
        if !certs.iter().any(|c| c.id == current.id) {
            certs.insert(0, current);
        }
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        Ok(certs
            .into_iter()
            .map(|c| HandedCa {
                id: c.id.to_string(),
                not_after: c
                    .not_after
                    .format(rfc3339)
                    .unwrap_or_else(|_| c.not_after.to_string()),
                pem: c.pem,
            })
            .collect())
    }
}
