//! Ownership: a CI job sees and touches only what it created.
//!
//! The `own` stage of the Docker request pipeline. It runs for every request,
//! in four steps the driver ([`crate::docker`]) calls, one file each:
//!
//! 1. **identify** ([`tenants`]: [`Ownership::identify`], first, before
//!    routing and the policy): the listener's [`identity::Identity`] names
//!    the tenant; a missing or wrong credential is a `401` with
//!    `WWW-Authenticate`.
//! 2. **resolve** ([`request`]: [`Ownership::resolve`], after the policy's
//!    query checks, before the body is read): every container, exec, volume
//!    or network the path (or `POST /commit`'s `container` query) names must
//!    carry the tenant's labels ([`resolve`] decides, [`lookup`] asks the
//!    daemon); the path is rewritten with the full ID; the predefined
//!    networks (`bridge`, `host`, `none`) may be inspected by name by all,
//!    without their containers. Listings, prunes and events get the tenant's
//!    label filter ([`filters`]). Image requests are checked against the
//!    state file ([`image_request`], [`images`]); pushes of namespaced tags
//!    are [`push`]. The result is an [`owned::Owned`], which also guards
//!    bodies that stream (loads, build contexts).
//! 3. **body** ([`create`]: [`owned::Owned::body`], after the policy judged
//!    the body): creates get the tenant's labels ([`labels`]); references
//!    inside bodies are resolved and must be the tenant's; a named volume
//!    that does not exist yet is created first by cistern with the tenant's
//!    labels (the daemon would otherwise create it unlabelled).
//! 4. **response** ([`response`]: [`owned::Owned::finish`], after the daemon
//!    answered): filters `images/json`, `system/df` and `info`, records
//!    builds, commits, tags, loads, imports and image deletions in the state
//!    file, and maps names back to the tenant's.
//!
//! Anything another tenant owns is answered the way dockerd answers for a
//! missing resource.
//!
//! [`cleanup`] removes a tenant's resources: on shutdown for listeners marked
//! `cleanup: true` (and for the orphans of a run that crashed, [`tenants`]),
//! and from `cistern cleanup --tenant NAME`. Name namespaces (two tenants
//! each with a volume `db`) are [`names`]; identities, from peer credentials,
//! tokens or TLS client certificates, are [`identity`]; image archives and
//! build contexts are read as they stream ([`tar_stream`], [`image_load`],
//! [`build_context`]); per-job sockets are [`crate::tenancy::jobs`]. Every call to the
//! daemon goes through [`crate::daemon::client`].

pub mod build_context;
pub mod cleanup;
pub mod create;
pub mod filters;
pub mod identity;
pub mod image_load;
pub mod image_request;
pub mod images;
pub mod labels;
pub mod lookup;
pub mod names;
pub mod owned;
pub mod push;
pub mod request;
pub mod resolve;
pub mod response;
pub mod state_file;
pub mod tar_stream;
pub mod tenants;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use self::identity::{Identity, Tenant};
use self::images::Store;
use self::push::PushLocks;
use self::state_file::StateFile;

/// A listener's ownership settings (its part of `listeners[]`).
#[derive(Debug, Clone)]
pub struct ListenerOwnership {
    /// How its clients are identified.
    pub identity: Identity,
    /// Its tenants' resources are removed at shutdown.
    pub cleanup: bool,
    /// Its tenants' names are prefixed on the daemon.
    pub namespaces: bool,
}

/// Ownership as configured: built once from the config.
#[derive(Debug)]
pub struct Ownership {
    instance: String,
    listeners: HashMap<String, ListenerOwnership>,
    store: Store,
    /// Tenants seen on `cleanup: true` listeners, in this run or in one that
    /// ended without its cleanup (a crash): their resources go at shutdown.
    seen: Mutex<BTreeSet<Tenant>>,
    /// `seen`, kept in `<state_dir>/cleanup.json` so a crash does not forget.
    pending: StateFile<BTreeSet<String>>,
    /// One push per image name at a time (pushes of namespaced tags tag the
    /// name they push for the duration).
    pushes: PushLocks,
}

impl Ownership {
    /// Ownership for instance `instance`, with its state in `state_dir`,
    /// over `listeners` (by name).
    pub fn new(
        instance: &str,
        state_dir: &std::path::Path,
        listeners: HashMap<String, ListenerOwnership>,
    ) -> Ownership {
        Ownership {
            instance: instance.to_string(),
            listeners,
            store: Store::new(state_dir),
            seen: Mutex::new(BTreeSet::new()),
            pending: StateFile::open(state_dir, "cleanup"),
            pushes: PushLocks::default(),
        }
    }

    /// The state file.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Shared between the proxy and shutdown.
pub type SharedOwnership = Arc<Ownership>;
