//! Tenants: who is asking (step 1, [`Ownership::identify`]), and whose
//! resources go at shutdown.
//!
//! A listener's [`Identity`] names the tenant; a missing or wrong credential
//! is a `401` with the listener's `WWW-Authenticate` challenge. Tenants seen
//! on `cleanup: true` listeners are remembered in `<state_dir>/cleanup.json`
//! as well as in memory, so that a run that ends without its cleanup (a
//! crash) leaves **orphans** the next run finds ([`Ownership::orphans`]):
//! adopted, to go at this run's shutdown, or reaped at once. The removal
//! itself is [`super::cleanup`]'s.

use std::collections::BTreeSet;

use http::{HeaderMap, StatusCode};

use super::identity::{AuthError, Identity, Tenant};
use super::labels::Owner;
use super::names::Namespace;
use super::Ownership;
use crate::daemon::error::DockerError;
use crate::listen::Peer;

impl Ownership {
    /// Step 1: who is asking. Errors are `401`s.
    pub fn identify(
        &self,
        listener: &str,
        peer: &Peer,
        headers: &HeaderMap,
    ) -> Result<Owner, DockerError> {
        let Some(l) = self.listeners.get(listener) else {
            return Err(DockerError::internal(format!(
                "cistern: no ownership settings for listener {listener}"
            )));
        };
        let tenant = l
            .identity
            .identify(peer, headers)
            .map_err(|err: AuthError| {
                DockerError::client(StatusCode::UNAUTHORIZED, err.to_string())
            })?;
        if l.cleanup {
            self.remember(&tenant);
        }
        Ok(Owner {
            namespace: l.namespaces.then(|| Namespace::of(tenant.as_str())),
            tenant,
            instance: self.instance.clone(),
        })
    }

    /// A tenant of a `cleanup: true` listener: its resources go at shutdown,
    /// and it is remembered across a crash (written once per tenant and run).
    fn remember(&self, tenant: &Tenant) {
        let new = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(tenant.clone()))
            .unwrap_or(false);
        if new {
            let pending = self.pending.clone();
            let name = tenant.to_string();
            tokio::task::spawn_blocking(move || {
                if let Err(err) = pending.update(|p| p.insert(name)) {
                    tracing::error!(target: "cistern::ownership", error = %err, "cannot record a tenant for cleanup");
                }
            });
        }
    }

    /// The `WWW-Authenticate` value for a `401` on this listener.
    pub fn challenge(&self, listener: &str) -> &'static str {
        self.listeners
            .get(listener)
            .map_or("Bearer realm=\"cistern\"", |l| l.identity.challenge())
    }

    /// Tenants of `cleanup: true` listeners left by an earlier run that did
    /// not clean up (a crash): adopted, so this run's shutdown removes their
    /// resources; or returned, to be reaped now.
    pub fn orphans(&self) -> Vec<Owner> {
        let left = match self.pending.load() {
            Ok(left) => left,
            Err(err) => {
                tracing::error!(target: "cistern::ownership", error = %err, "cannot read the cleanup state");
                return Vec::new();
            }
        };
        let tenants: Vec<Tenant> = left
            .into_iter()
            .filter_map(|t| Tenant::new(t).ok())
            .collect();
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend(tenants.iter().cloned());
        }
        tenants
            .into_iter()
            .map(|t| Owner::new(t, self.instance.clone()))
            .collect()
    }

    /// Forgets tenants whose resources were removed.
    pub fn cleaned(&self, tenants: &[Tenant]) {
        if let Ok(mut seen) = self.seen.lock() {
            for t in tenants {
                seen.remove(t);
            }
        }
        let done: BTreeSet<String> = tenants.iter().map(|t| t.to_string()).collect();
        if let Err(err) = self.pending.update(|p| p.retain(|t| !done.contains(t))) {
            tracing::error!(target: "cistern::ownership", error = %err, "cannot update the cleanup state");
        }
    }

    /// Tenants whose resources go when cistern shuts down: those of listeners
    /// marked `cleanup: true` (fixed and token tenants, and peer tenants seen).
    pub fn cleanup_tenants(&self) -> Vec<Owner> {
        let mut tenants: BTreeSet<Tenant> = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for l in self.listeners.values().filter(|l| l.cleanup) {
            match &l.identity {
                Identity::Fixed(t) => {
                    tenants.insert(t.clone());
                }
                Identity::Tokens(tokens) => tenants.extend(tokens.iter().map(|t| t.tenant.clone())),
                Identity::Certificate(c) => tenants.extend(c.map.values().cloned()),
                Identity::Peer => {}
            }
        }
        tenants
            .into_iter()
            .map(|tenant| Owner::new(tenant, self.instance.clone()))
            .collect()
    }
}
