//! Which tenant started which BuildKit build over `/grpc`, so a tenant's
//! `Status` follows only builds its own `Solve` started (the daemon streams
//! any build's steps and logs to whoever names its ref).
//!
//! Sessions are not here: they are bound to their tenant in
//! [`crate::tenancy::sessions`], shared with the `/session` hijack. A build's
//! ref stays the tenant's for an hour.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::tenancy::ownership::labels::Owner;

/// How long a build's ref stays the tenant's.
const REF_TTL: Duration = Duration::from_secs(3600);

/// The key the registry knows a tenant by: its name and cistern instance.
pub fn key(owner: &Owner) -> String {
    format!("{}\n{}", owner.tenant.as_str(), owner.instance)
}

/// Build refs by tenant ([`key`]).
#[derive(Debug, Default)]
pub struct Registry {
    /// Build ref → (tenant key, when started).
    refs: Mutex<HashMap<String, (String, Instant)>>,
    changed: Notify,
}

/// Whose a ref is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    Mine,
    Other,
    Unknown,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.refs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A build ref claimed by `tenant`'s `Solve`; false when another
    /// tenant's build has it.
    pub fn claim_ref(&self, r#ref: &str, tenant: &str, now: Instant) -> bool {
        {
            let mut refs = self.lock();
            refs.retain(|_, (_, at)| now.saturating_duration_since(*at) < REF_TTL);
            match refs.get(r#ref) {
                Some((owner, _)) if owner != tenant => return false,
                _ => {
                    refs.insert(r#ref.to_string(), (tenant.to_string(), now));
                }
            }
        }
        self.changed.notify_waiters();
        true
    }

    pub fn build_ref(&self, r#ref: &str, tenant: &str) -> Whose {
        match self.lock().get(r#ref) {
            None => Whose::Unknown,
            Some((o, _)) if o == tenant => Whose::Mine,
            Some(_) => Whose::Other,
        }
    }

    /// Asks `check` until it knows, or `patience` ran out (a client sends
    /// `Status` alongside `Solve`, in any order).
    pub async fn wait(&self, patience: Duration, check: impl Fn(&Self) -> Whose) -> Whose {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = check(self);
            if now != Whose::Unknown {
                return now;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(self);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn refs_are_claimed_once_and_expire() {
        let r = Registry::default();
        let t0 = Instant::now();
        assert!(r.claim_ref("x", "a", t0));
        assert!(r.claim_ref("x", "a", t0));
        assert!(!r.claim_ref("x", "b", t0));
        assert_eq!(r.build_ref("x", "b"), Whose::Other);
        assert!(r.claim_ref("y", "b", t0 + REF_TTL));
        assert_eq!(r.build_ref("x", "a"), Whose::Unknown);
    }

    #[tokio::test]
    async fn waiting_sees_a_later_claim_or_gives_up() {
        let r = Arc::new(Registry::default());
        let r2 = r.clone();
        let waiter = tokio::spawn(async move {
            r2.wait(Duration::from_secs(5), |r| r.build_ref("x", "a"))
                .await
        });
        tokio::task::yield_now().await;
        r.claim_ref("x", "a", Instant::now());
        assert_eq!(waiter.await.unwrap(), Whose::Mine);
        let gave_up = r
            .wait(Duration::from_millis(100), |r| r.build_ref("z", "a"))
            .await;
        assert_eq!(gave_up, Whose::Unknown);
    }
}
