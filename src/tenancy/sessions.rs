//! BuildKit sessions and build IDs, bound to the tenant that opened them.
//!
//! A BuildKit session is the client's own file server on the daemon's side
//! of a `/session` hijack: the build context, the Dockerfile, `--secret`
//! files, the SSH agent, and the target of `--output`. A build names it by
//! ID (`POST /build?session=<id>`), and the daemon hands the build whichever
//! session has that ID, whoever opened it. So cistern binds each session ID
//! to the tenant whose `/session` request carried it
//! (`X-Docker-Expose-Session-Uuid`) for as long as that hijack is open:
//! - a second `/session` with an ID another tenant holds is refused;
//! - a build naming a session that is not open, or is another tenant's, is
//!   refused: its context, secrets and SSH agent are not the builder's;
//! - a build's `buildid` is bound to the tenant too, for the life of the
//!   session it builds with, and `POST /build/cancel?id=` cancels only the
//!   tenant's own builds (the daemon cancels any build by ID).
//!
//! The docker CLI sends the build while its `/session` request is still on
//! its way, so a build naming a session that is not open yet waits for it
//! as the daemon does ([`OPEN_WAIT`]), then is refused.
//!
//! Kept in memory only: a session lives as long as its connection, and a
//! restart of cistern closes every hijack. Session bytes pass untouched
//! (cistern never reads them), and IDs are logged, never what flows.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use http::StatusCode;

use super::ownership::labels::Owner;
use crate::daemon::error::DockerError;

/// The header that names a session on its `/session` request.
pub const SESSION_HEADER: &str = "x-docker-expose-session-uuid";

/// The session ID a `/session` hijack (or a gRPC `Session` stream) names:
/// its one [`SESSION_HEADER`], or `""` when it has none, several, or one
/// that is not text.
pub fn id_in(headers: &http::HeaderMap) -> &str {
    let mut ids = headers.get_all(SESSION_HEADER).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) => id.to_str().unwrap_or(""),
        _ => "",
    }
}

/// How long a build waits for the session it names to open.
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who holds a session: a tenant of one cistern instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    tenant: String,
    instance: String,
}

impl Holder {
    fn of(owner: &Owner) -> Holder {
        Holder {
            tenant: owner.tenant.to_string(),
            instance: owner.instance.clone(),
        }
    }
}

#[derive(Debug)]
struct Session {
    holder: Holder,
    /// Open `/session` hijacks of the holder with this ID.
    open: usize,
    /// Build IDs the holder's builds with this session carried.
    builds: HashSet<String>,
}

/// The open sessions, by ID.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    /// Woken whenever a session opens, for builds waiting for theirs.
    opened: tokio::sync::Notify,
}

/// Why a build may not use a session.
enum NotUsable {
    /// Nobody holds it (yet).
    NotOpen,
    /// Another tenant's, session or build ID.
    Refused(DockerError),
}

/// A session held open; dropping it (the hijack ended, or the daemon did
/// not switch protocols) releases the ID and its build IDs.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self.sessions.lock();
        if let Some(s) = open.get_mut(&self.id) {
            s.open = s.open.saturating_sub(1);
            if s.open == 0 {
                open.remove(&self.id);
            }
        }
    }
}

fn refused(message: String) -> DockerError {
    DockerError::client(StatusCode::FORBIDDEN, message)
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a consistent map.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many session IDs are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A `/session` request: binds `id` to `owner` until the guard drops.
    pub fn open(self: &Arc<Self>, owner: &Owner, id: &str) -> Result<SessionGuard, DockerError> {
        if id.is_empty() {
            return Err(DockerError::client(
                StatusCode::BAD_REQUEST,
                "cistern: a BuildKit session needs one X-Docker-Expose-Session-Uuid header",
            ));
        }
        let holder = Holder::of(owner);
        let mut open = self.lock();
        match open.get_mut(id) {
            Some(s) if s.holder != holder => {
                return Err(refused(format!(
                    "cistern: BuildKit session {id} is held by another tenant"
                )))
            }
            Some(s) => s.open += 1,
            None => {
                open.insert(
                    id.to_string(),
                    Session {
                        holder,
                        open: 1,
                        builds: HashSet::new(),
                    },
                );
            }
        }
        drop(open);
        self.opened.notify_waiters();
        Ok(SessionGuard {
            sessions: self.clone(),
            id: id.to_string(),
        })
    }

    /// A build naming `session` (and `build_id`, when not empty): the
    /// session must be `owner`'s, open now or within `wait`; the build ID
    /// becomes `owner`'s for the session's life, unless another tenant
    /// holds it.
    pub async fn build(
        &self,
        owner: &Owner,
        session: &str,
        build_id: &str,
        wait: std::time::Duration,
    ) -> Result<(), DockerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an open in between wakes it.
            let notified = self.opened.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_build(owner, session, build_id) {
                Ok(()) => return Ok(()),
                Err(NotUsable::Refused(err)) => return Err(err),
                Err(NotUsable::NotOpen) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(refused(format!(
                            "cistern: BuildKit session {session} is not open for this tenant (the build's session must be the client's own)"
                        )));
                    }
                }
            }
        }
    }

    /// Waits until a session `session` is open (whoever holds it), for at
    /// most `wait`.
    pub async fn wait_open(&self, session: &str, wait: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.opened.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().contains_key(session) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn try_build(&self, owner: &Owner, session: &str, build_id: &str) -> Result<(), NotUsable> {
        let holder = Holder::of(owner);
        let mut open = self.lock();
        if !build_id.is_empty()
            && open
                .values()
                .any(|s| s.holder != holder && s.builds.contains(build_id))
        {
            return Err(NotUsable::Refused(refused(format!(
                "cistern: build ID {build_id} is another tenant's"
            ))));
        }
        match open.get_mut(session) {
            Some(s) if s.holder == holder => {
                if !build_id.is_empty() {
                    s.builds.insert(build_id.to_string());
                }
                Ok(())
            }
            Some(_) => Err(NotUsable::Refused(refused(format!(
                "cistern: BuildKit session {session} is another tenant's (the build's session must be the client's own)"
            )))),
            None => Err(NotUsable::NotOpen),
        }
    }

    /// `POST /build/cancel?id=`: only a build of `owner`'s.
    pub fn cancel(&self, owner: &Owner, build_id: &str) -> Result<(), DockerError> {
        let holder = Holder::of(owner);
        let own = self
            .lock()
            .values()
            .any(|s| s.holder == holder && s.builds.contains(build_id));
        if own {
            Ok(())
        } else {
            Err(DockerError::client(
                StatusCode::NOT_FOUND,
                format!("cistern: no build {build_id} of this tenant is running"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::ownership::identity::Tenant;

    fn owner(name: &str) -> Owner {
        Owner::new(Tenant::new(name).unwrap(), "ci")
    }

    const NOW: std::time::Duration = std::time::Duration::ZERO;

    #[tokio::test]
    async fn a_build_waits_for_its_session_to_open() {
        let s = Arc::new(Sessions::default());
        let alice = owner("alice");
        let waiting = {
            let (s, alice) = (s.clone(), alice.clone());
            tokio::spawn(async move { s.build(&alice, "s1", "b1", OPEN_WAIT).await })
        };
        tokio::task::yield_now().await;
        let _guard = s.open(&alice, "s1").unwrap();
        waiting.await.unwrap().unwrap();
        s.cancel(&alice, "b1").unwrap();
    }

    #[tokio::test]
    async fn a_session_is_its_openers_until_its_hijack_ends() {
        let s = Arc::new(Sessions::default());
        let (alice, bob) = (owner("alice"), owner("bob"));
        let guard = s.open(&alice, "s1").unwrap();
        assert_eq!(
            s.open(&bob, "s1").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        s.build(&alice, "s1", "b1", NOW).await.unwrap();
        s.build(&alice, "s1", "", NOW).await.unwrap();
        for (session, build) in [("s1", "b2"), ("s2", "b2"), ("s1", "b1")] {
            assert_eq!(
                s.build(&bob, session, build, NOW).await.unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{session} {build}"
            );
        }
        // Bob's own session cannot take Alice's build ID either.
        let bobs = s.open(&bob, "s2").unwrap();
        assert!(s.build(&bob, "s2", "b1", NOW).await.is_err());
        s.cancel(&alice, "b1").unwrap();
        assert_eq!(
            s.cancel(&bob, "b1").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        // The same tenant may hold an ID twice; it is released with the last.
        let again = s.open(&alice, "s1").unwrap();
        drop(guard);
        s.build(&alice, "s1", "b3", NOW).await.unwrap();
        drop(again);
        assert!(s.build(&alice, "s1", "b4", NOW).await.is_err());
        assert!(s.cancel(&alice, "b1").is_err());
        drop(bobs);
        assert!(s.is_empty());
        // Released, the ID is free for anyone.
        let _g = s.open(&bob, "s1").unwrap();
        s.build(&bob, "s1", "b1", NOW).await.unwrap();
        assert!(s.open(&alice, "").is_err());
        // Another instance's tenant of the same name is another holder.
        let other = Owner::new(Tenant::new("bob").unwrap(), "other");
        assert!(s.build(&other, "s1", "", NOW).await.is_err());
    }
}
