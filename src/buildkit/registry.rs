//! Who opened which BuildKit session and started which build: the state the
//! `/grpc` relay keeps across connections, so a tenant's `Solve` reads only
//! sessions it opened and its `Status` follows only builds it started.
//!
//! Sessions are the client's attachments (context, secrets, SSH agent) the
//! daemon calls back into; their IDs travel in the `Session` call's
//! `X-Docker-Expose-Session-Uuid` header. Another tenant that named one in its
//! `Solve` would read this tenant's files and secrets. A session is known
//! from its first stream until its last closes; a build's ref for an hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::tenancy::ownership::labels::Owner;

/// How long a build's ref stays the tenant's.
const REF_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
struct Inner {
    /// Session ID → (tenant key, open streams).
    sessions: HashMap<String, (String, usize)>,
    /// Build ref → (tenant key, when started).
    refs: HashMap<String, (String, Instant)>,
}

/// The key the registry knows a tenant by: its name and cistern instance.
/// (The `/session` hijack registers its sessions with it too.)
pub fn key(owner: &Owner) -> String {
    format!("{}\n{}", owner.tenant.as_str(), owner.instance)
}

/// Sessions and build refs by tenant ([`key`]).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    changed: Notify,
}

/// Whose a session or ref is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    Mine,
    Other,
    Unknown,
}

/// Keeps a session open; it is forgotten when the last guard drops.
#[derive(Debug)]
pub struct SessionGuard {
    registry: Arc<Registry>,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some((_, open)) = inner.sessions.get_mut(&self.id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                inner.sessions.remove(&self.id);
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session stream opened by `tenant`; `None` when the ID is another
    /// tenant's.
    pub fn open_session(self: &Arc<Self>, id: &str, tenant: &str) -> Option<SessionGuard> {
        {
            let mut inner = self.lock();
            let entry = inner
                .sessions
                .entry(id.to_string())
                .or_insert_with(|| (tenant.to_string(), 0));
            if entry.0 != tenant {
                return None;
            }
            entry.1 += 1;
        }
        self.changed.notify_waiters();
        Some(SessionGuard {
            registry: self.clone(),
            id: id.to_string(),
        })
    }

    /// A build ref claimed by `tenant`'s `Solve`; false when another
    /// tenant's build has it.
    pub fn claim_ref(&self, r#ref: &str, tenant: &str, now: Instant) -> bool {
        {
            let mut inner = self.lock();
            inner
                .refs
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < REF_TTL);
            match inner.refs.get(r#ref) {
                Some((owner, _)) if owner != tenant => return false,
                _ => {
                    inner
                        .refs
                        .insert(r#ref.to_string(), (tenant.to_string(), now));
                }
            }
        }
        self.changed.notify_waiters();
        true
    }

    pub fn session(&self, id: &str, tenant: &str) -> Whose {
        whose(
            self.lock().sessions.get(id).map(|(t, _)| t.as_str()),
            tenant,
        )
    }

    pub fn build_ref(&self, r#ref: &str, tenant: &str) -> Whose {
        whose(self.lock().refs.get(r#ref).map(|(t, _)| t.as_str()), tenant)
    }

    /// Asks `check` until it knows, or `patience` ran out (a client sends
    /// `Session` and `Status` alongside `Solve`, in any order).
    pub async fn wait(&self, patience: Duration, check: impl Fn(&Self) -> Whose) -> Whose {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.changed.notified();
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

fn whose(owner: Option<&str>, tenant: &str) -> Whose {
    match owner {
        None => Whose::Unknown,
        Some(o) if o == tenant => Whose::Mine,
        Some(_) => Whose::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_openers_while_open() {
        let r = Arc::new(Registry::default());
        let g1 = r.open_session("s", "a").unwrap();
        assert!(r.open_session("s", "b").is_none());
        let g2 = r.open_session("s", "a").unwrap();
        assert_eq!(r.session("s", "a"), Whose::Mine);
        assert_eq!(r.session("s", "b"), Whose::Other);
        drop(g1);
        assert_eq!(r.session("s", "a"), Whose::Mine);
        drop(g2);
        assert_eq!(r.session("s", "a"), Whose::Unknown);
        assert!(r.open_session("s", "b").is_some());
    }

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
