//! The rotating set of CA generations that cistern hands to CI containers and signs
//! leaves with.
//!
//! # Rotation design
//!
//! Every CA generation lives for `lifetime` (default 24 h) and is constrained to the cached
//! domains. A CI container can only be given a CA at creation time (it is baked into the
//! container's trust store), so the CA it gets must stay valid for the whole job:
//!
//! - **Hand-out rule.** A container created at time `t` is handed the *current* CA: the
//!   newest generation, matching the configured domains and algorithm, with
//!   `not_after ≥ t + max_job_duration + rotation_margin` (defaults 3 h + 10 min).
//!   Its CA therefore outlives any job that respects `max_job_duration`.
//! - **Rotation rule.** When no generation satisfies the hand-out rule — the current one
//!   has less than `max_job_duration + rotation_margin` left, or the configuration changed —
//!   a new generation is created ([`CaStore::tick`] does this ahead of time;
//!   [`CaStore::current_for_new_container`] does it on demand if a tick was missed). The
//!   configuration requires `max_job_duration + rotation_margin < lifetime`, so each
//!   generation is current for `lifetime - max_job_duration - rotation_margin`
//!   (≈ 20 h 50 min by default) and at most two or three generations are alive at once.
//! - **Retention rule.** Older generations stay loaded and on disk, still signing leaves for
//!   the containers that were given them, until their `not_after`. Then
//!   [`CaStore::tick`] forgets them, drops their cached leaves and deletes their key and
//!   certificate files.
//! - **Domain changes.** A generation's name constraints are the domains configured when it
//!   was created, and they never change. When the configured domains differ from those of
//!   every generation (a domain added or removed, then a restart), no generation satisfies
//!   the hand-out rule, so [`CaStore::open`] creates one with the new constraints at once;
//!   the older ones stay, with their own constraints, for the containers that hold them.
//! - **Hand-out of the bundle.** A container is given *every* generation valid at its
//!   creation, its current one among them (cistern records their ids on it as a label).
//! - **Choosing the signer, per name.** For a handshake for `host` at `s`, the caching proxy
//!   signs with the **oldest generation valid at `s` whose name constraints permit `host`**
//!   ([`CaStore::signer_for`], [`CaStore::leaf_for_name`]); a host outside the configured
//!   domains is refused ([`Error::NotCached`]) whatever older generations permit. That
//!   generation is one the connecting container holds, for every container within
//!   `max_job_duration` of its creation that was given `host`:
//!   - a container created at `t` was given `host` if `host` was inside the domains
//!     configured at `t`, which are the constraints of its current generation `C`; `C` is
//!     valid until at least `t + max_job_duration + rotation_margin`, so at `s` it is
//!     valid and permits `host`: the signer `S` exists and is `C` or older than `C`
//!     (generations are ordered by `not_before`, and all are backdated alike, so that is
//!     the order they were created in);
//!   - `S` started no later than `C`, which started no later than `t`, and `S` is still
//!     valid at `s ≥ t`, so `S` was valid at `t`: it is in the container's bundle.
//!
//!   So a domain added reaches new containers at once: they hold the generation created
//!   with it, and only they were given it. A name kept across the change keeps its older
//!   signer, which containers created before hold, and so do containers created after
//!   (they are given every valid generation). Without domain changes every generation
//!   permits every cached name and the rule is simply "the oldest valid generation". The
//!   choice depends on the name and the time only: no lookup of which container is
//!   calling, no I/O per handshake. A container asking for a name it was not given (say
//!   through the forward proxy, for a domain added after its creation) may not hold the
//!   signer; it was never promised that name. [`CaStore::leaf_for_client`],
//!   [`CaStore::signer`] and [`CaStore::pick_trusted`] serve callers that do know the
//!   client's CA.
//! - **Restarts.** Generations are stored in the state directory (see `persist.rs`) and
//!   reloaded by [`CaStore::open`], so containers created before a restart keep working;
//!   expired, unreadable or half-written generations are removed on load.
//!
//! Time is always a parameter (`now`), never read from the clock here, so tests and the
//! caller's maintenance task decide what time it is.
//!
//! Not here: where the CA is put inside a container, or which container a connection comes
//! from — that is cistern's Docker side.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use time::OffsetDateTime;

use crate::authority::{add, CaCert, CaId, CertificateAuthority};
use crate::config::CaConfig;
use crate::error::{Error, Result};
use crate::leaf::{Leaf, LeafCache};
use crate::{name, persist};

/// What a [`CaStore::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// The generation created because none satisfied the hand-out rule.
    pub rotated: Option<CaId>,
    /// Expired generations that were dropped and whose files were deleted.
    pub removed: Vec<CaId>,
    /// Generations another process stored (e.g. `cistern ca rotate`), now in use.
    pub adopted: Vec<CaId>,
}

/// The CA generations of one cistern instance. Cheap to share (`Arc<CaStore>`); all methods
/// take `&self`.
pub struct CaStore {
    config: CaConfig,
    /// The cached domains now: the configured ones, and those added since
    /// ([`CaStore::add_domains`]). Normalised, sorted, unique.
    domains: RwLock<Arc<Vec<String>>>,
    /// Oldest first (by `not_before`).
    generations: RwLock<Vec<Arc<CertificateAuthority>>>,
    leaves: Mutex<LeafCache>,
    /// Held while creating a generation, so two callers never rotate at once.
    rotating: Mutex<()>,
}

impl std::fmt::Debug for CaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaStore")
            .field("config", &self.config)
            .field("generations", &*self.read())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CaStore {
    /// Creates the state directory (0700) if missing, loads the stored generations, removes
    /// expired or broken ones, and runs a first [`CaStore::tick`] so a current CA exists.
    pub fn open(config: CaConfig, now: OffsetDateTime) -> Result<Self> {
        let config = config.validate()?;
        persist::ensure_dir(&config.state_dir)?;
        let loaded = persist::load_all(&config.state_dir, now)?;
        tracing::info!(
            dir = %config.state_dir.display(),
            loaded = loaded.len(),
            "CA store opened"
        );
        let store = CaStore {
            domains: RwLock::new(Arc::new(config.domains.clone())),
            config,
            generations: RwLock::new(loaded.into_iter().map(Arc::new).collect()),
            leaves: Mutex::new(LeafCache::default()),
            rotating: Mutex::new(()),
        };
        store.tick(now)?;
        Ok(store)
    }

    /// The validated configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The cached domains now: new generations are constrained to them, and
    /// leaves are issued for them only.
    pub fn domains(&self) -> Arc<Vec<String>> {
        self.domains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds cached domains while running (hosts learned from a container's
    /// image, say). When that changes the set, a generation constrained to
    /// the new set is created at once, so a container created from now on is
    /// handed it (with every other valid one) and trusts the proxy for the
    /// new names; containers created before keep what they were given. Returns
    /// the new generation, `None` when every name was cached already (itself
    /// or under a cached domain).
    pub fn add_domains<S: AsRef<str>>(
        &self,
        added: &[S],
        now: OffsetDateTime,
    ) -> Result<Option<CaCert>> {
        let added = added
            .iter()
            .map(|d| name::domain(d.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let _rotating = lock(&self.rotating);
        let current = self.domains();
        let added: Vec<String> = added
            .into_iter()
            .filter(|d| !name::permits(&current, d))
            .collect();
        if added.is_empty() {
            return Ok(None);
        }
        let mut domains: Vec<String> = current.iter().cloned().chain(added).collect();
        domains.sort();
        domains.dedup();
        *self.domains.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(domains);
        self.create_generation(now).map(Some)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<CertificateAuthority>>> {
        self.generations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<CertificateAuthority>>> {
        self.generations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation that satisfies the hand-out rule at `now`, if any.
    fn current(&self, now: OffsetDateTime) -> Option<Arc<CertificateAuthority>> {
        let needed_until = add(now, self.config.required_remaining());
        self.read()
            .iter()
            .rev()
            .find(|ca| {
                ca.is_valid_at(now)
                    && ca.not_after() >= needed_until
                    && ca.algorithm() == self.config.algorithm
                    && ca.domains() == self.domains().as_slice()
            })
            .cloned()
    }

    /// The newest generation valid at `now`, whatever its configuration.
    fn newest_valid(&self, now: OffsetDateTime) -> Result<Arc<CertificateAuthority>> {
        self.read()
            .iter()
            .rev()
            .find(|ca| ca.is_valid_at(now))
            .cloned()
            .ok_or(Error::NoValidCa { now })
    }

    /// The CA to give a container created at `now`: valid until at least
    /// `now + max_job_duration + rotation_margin`. Rotates first if no generation qualifies
    /// (normally [`CaStore::tick`] has already done so).
    pub fn current_for_new_container(&self, now: OffsetDateTime) -> Result<CaCert> {
        if let Some(ca) = self.current(now) {
            return Ok(ca.cert().clone());
        }
        let _rotating = lock(&self.rotating);
        // Someone else may have rotated while we waited.
        if let Some(ca) = self.current(now) {
            return Ok(ca.cert().clone());
        }
        self.create_generation(now)
    }

    /// Creates, stores and adds a new generation, whatever the state of the others.
    pub fn rotate(&self, now: OffsetDateTime) -> Result<CaCert> {
        let _rotating = lock(&self.rotating);
        self.create_generation(now)
    }

    /// Caller holds `rotating`. The generation is on disk before anyone can be handed it.
    fn create_generation(&self, now: OffsetDateTime) -> Result<CaCert> {
        let ca = CertificateAuthority::generate(
            self.config.algorithm,
            &self.domains(),
            self.config.lifetime,
            now,
        )?;
        persist::write_generation(&self.config.state_dir, &ca)?;
        tracing::info!(
            ca = %ca.id(),
            not_before = %ca.not_before(),
            not_after = %ca.not_after(),
            "created CA generation"
        );
        let cert = ca.cert().clone();
        let mut generations = self.write();
        generations.push(Arc::new(ca));
        generations.sort_by_key(|ca| ca.not_before());
        Ok(cert)
    }

    /// Periodic maintenance (run it every minute or so): forgets expired generations and
    /// deletes their files, drops stale cached leaves, and rotates if no generation satisfies
    /// the hand-out rule.
    pub fn tick(&self, now: OffsetDateTime) -> Result<TickReport> {
        let mut report = TickReport::default();
        // Generations stored by another process (`cistern ca rotate`) join in.
        let known: Vec<CaId> = self.read().iter().map(|ca| ca.id().clone()).collect();
        let adopted = persist::load_new(&self.config.state_dir, &known, now)?;
        if !adopted.is_empty() {
            let mut generations = self.write();
            for ca in adopted {
                tracing::info!(ca = %ca.id(), "adopted CA generation stored by another process");
                report.adopted.push(ca.id().clone());
                generations.push(Arc::new(ca));
            }
            generations.sort_by_key(|ca| ca.not_before());
        }
        let expired: Vec<CaId> = self
            .read()
            .iter()
            .filter(|ca| ca.not_after() <= now)
            .map(|ca| ca.id().clone())
            .collect();
        for id in expired {
            // Files first: if deleting fails the generation stays listed (it is expired, so
            // it signs nothing) and the next tick tries again.
            persist::remove_generation(&self.config.state_dir, &id)?;
            self.write().retain(|ca| ca.id() != &id);
            tracing::info!(ca = %id, "removed expired CA generation");
            report.removed.push(id);
        }
        {
            let generations = self.read();
            lock(&self.leaves).retain(|id| generations.iter().any(|ca| ca.id() == id), now);
        }
        if self.current(now).is_none() {
            let _rotating = lock(&self.rotating);
            if self.current(now).is_none() {
                report.rotated = Some(self.create_generation(now)?.id);
            }
        }
        Ok(report)
    }

    /// The generation with this id, if held (expired ones are held until the next tick).
    pub fn get(&self, id: &CaId) -> Option<Arc<CertificateAuthority>> {
        self.read().iter().find(|ca| ca.id() == id).cloned()
    }

    /// The CA to sign with for a client that was handed `client_ca`: that one while it is
    /// valid at `now`, otherwise (unknown, expired, or `None`) the newest CA valid at `now`.
    pub fn signer(
        &self,
        client_ca: Option<&CaId>,
        now: OffsetDateTime,
    ) -> Result<Arc<CertificateAuthority>> {
        if let Some(id) = client_ca {
            match self.get(id) {
                Some(ca) if ca.is_valid_at(now) => return Ok(ca),
                Some(_) => tracing::debug!(ca = %id, "client's CA is not valid now, falling back"),
                None => tracing::debug!(ca = %id, "client's CA is unknown, falling back"),
            }
        }
        self.newest_valid(now)
    }

    /// The CA to sign with for a client that trusts any of `trusted`: the newest of them
    /// valid at `now`, otherwise the newest CA valid at `now`.
    pub fn pick_trusted<'a>(
        &self,
        trusted: impl IntoIterator<Item = &'a CaId>,
        now: OffsetDateTime,
    ) -> Result<Arc<CertificateAuthority>> {
        let trusted: Vec<&CaId> = trusted.into_iter().collect();
        let picked = self
            .read()
            .iter()
            .rev()
            .find(|ca| ca.is_valid_at(now) && trusted.contains(&ca.id()))
            .cloned();
        match picked {
            Some(ca) => Ok(ca),
            None => self.newest_valid(now),
        }
    }

    /// The generation that signs leaves for `host` at `now`: the oldest one valid at `now`
    /// whose name constraints permit `host` (the per-name rule of the module doc). Refused
    /// with [`Error::InvalidHost`] for something that is not a DNS name,
    /// [`Error::NotCached`] for a host outside the configured domains, and
    /// [`Error::NoCaPermits`] when no valid generation permits it.
    pub fn signer_for(&self, host: &str, now: OffsetDateTime) -> Result<Arc<CertificateAuthority>> {
        let host = name::host(host)?;
        if !name::permits(&self.domains(), &host) {
            return Err(Error::NotCached { host });
        }
        let signer = self
            .read()
            .iter()
            .find(|ca| ca.is_valid_at(now) && name::permits(ca.domains(), &host))
            .cloned();
        signer.ok_or(Error::NoCaPermits { host, now })
    }

    /// [`CaStore::signer_for`] then its leaf for `host`, from the cache when a fresh one is
    /// there: what the caching proxy shows a client asking for `host`.
    pub fn leaf_for_name(&self, host: &str, now: OffsetDateTime) -> Result<Arc<Leaf>> {
        let ca = self.signer_for(host, now)?;
        self.issue_with(&ca, host, now)
    }

    /// A leaf for `host` signed by exactly the generation `ca_id`, from the cache when a
    /// fresh one is there (see [`crate::leaf`] for the reuse rule). Refused with
    /// [`Error::NotPermitted`] when `host` is outside that CA's name constraints,
    /// [`Error::UnknownCa`] / [`Error::CaNotValid`] when the CA cannot sign at `now`.
    pub fn issue_leaf(&self, ca_id: &CaId, host: &str, now: OffsetDateTime) -> Result<Arc<Leaf>> {
        let ca = self
            .get(ca_id)
            .ok_or_else(|| Error::UnknownCa { id: ca_id.clone() })?;
        self.issue_with(&ca, host, now)
    }

    /// [`CaStore::signer`] then [`CaStore::issue_leaf`]: the leaf a client that was handed
    /// `client_ca` should be shown for `host`.
    pub fn leaf_for_client(
        &self,
        client_ca: Option<&CaId>,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<Leaf>> {
        let ca = self.signer(client_ca, now)?;
        self.issue_with(&ca, host, now)
    }

    fn issue_with(
        &self,
        ca: &CertificateAuthority,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<Leaf>> {
        let host = name::host(host)?;
        ca.check_valid_at(now)?;
        if let Some(leaf) = lock(&self.leaves).get(ca.id(), &host, now, ca.not_after()) {
            return Ok(leaf);
        }
        // Signing happens outside the cache lock; two racing callers both issue and the
        // later insert wins, which is harmless.
        let leaf = Arc::new(ca.issue(&host, self.config.leaf_lifetime, now)?);
        lock(&self.leaves).insert(Arc::clone(&leaf), now);
        Ok(leaf)
    }

    /// Certificates of all generations valid at `now`, newest first.
    pub fn cas_valid_at(&self, now: OffsetDateTime) -> Vec<CaCert> {
        self.read()
            .iter()
            .rev()
            .filter(|ca| ca.is_valid_at(now))
            .map(|ca| ca.cert().clone())
            .collect()
    }

    /// PEM certificates of all generations valid at `now`, newest first (a trust bundle).
    pub fn ca_pems_valid_at(&self, now: OffsetDateTime) -> Vec<String> {
        self.cas_valid_at(now)
            .into_iter()
            .map(|cert| cert.pem)
            .collect()
    }

    /// Number of leaves in the cache (for metrics and tests).
    pub fn cached_leaves(&self) -> usize {
        lock(&self.leaves).len()
    }
}
