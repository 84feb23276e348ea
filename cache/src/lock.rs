//! Single-flight: one origin fetch per key at a time.
//!
//! When many CI jobs miss on the same file at once, exactly one of them (the
//! *leader*) fetches it from the origin and writes it to the store; the others
//! (*followers*) are served from that one download.
//!
//! The lock knows nothing of storage: it is keyed by strings and generic over
//! what a leader hands its followers while its fetch runs (`T`). As soon as
//! the leader has the origin's answer and is writing it, it publishes that
//! ([`FlightGuard::publish`]); the store wires it to the body being written
//! (its `Tail`, see `tail.rs`), so followers read the body behind the writer
//! as it grows ([`FlightWaiter::download`]) and a large first download
//! reaches them all at once instead of after the whole transfer. Requests
//! that cannot use a plain body (ranges, conditionals) wait for the commit
//! and read the entry instead ([`FlightWaiter::wait`]). Followers wait for
//! the download to *start* at most the configured timeout, so a stuck origin
//! cannot hold them forever; on timeout or leader failure they go to the
//! origin themselves, without storing.
//!
//! How the proxy uses it, after a lookup missed:
//!
//! ```text
//! match store.lock(&key) {
//!     Flight::Leader(guard) => {
//!         // look up again: another leader may have committed just now
//!         // fetch from origin, stream to client and Writer, commit
//!         guard.finish(committed);          // or drop it on error
//!     }
//!     Flight::Follower(waiter) => match waiter.wait().await {
//!         WaitOutcome::Committed => { /* look up again: a hit */ }
//!         WaitOutcome::Failed | WaitOutcome::TimedOut => { /* forward to origin, no store */ }
//!     }
//! }
//! ```
//!
//! The store's `single_flight` wraps exactly that.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// State of an in-flight fetch, as seen by followers.
#[derive(Debug, Clone)]
enum FlightState<T> {
    /// Fetching; with what the leader published once the origin answered
    /// (the write in progress).
    Running(Option<T>),
    Committed,
    Failed,
}

impl<T> FlightState<T> {
    fn running(&self) -> bool {
        matches!(self, FlightState::Running(_))
    }
}

/// What a follower of a download got.
#[derive(Debug)]
pub enum Following<T> {
    /// The leader published its download (being written): read it as it
    /// grows.
    Download(T),
    /// It ended before the follower could read along (or never started).
    Done(WaitOutcome),
}

/// What a follower learnt by waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The leader committed an entry: look it up.
    Committed,
    /// The leader gave up (origin error, no-store response, full disk…).
    Failed,
    /// The leader took longer than the lock timeout.
    TimedOut,
}

impl fmt::Display for WaitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitOutcome::Committed => "leader committed",
            WaitOutcome::Failed => "leader failed",
            WaitOutcome::TimedOut => "timed out waiting for leader",
        })
    }
}

type FlightMap<T> = HashMap<String, watch::Receiver<FlightState<T>>>;

/// The table of in-flight fetches, shared by a store's clones.
#[derive(Debug)]
pub(crate) struct Flights<T> {
    map: Arc<Mutex<FlightMap<T>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            map: Arc::default(),
        }
    }
}

impl<T> Clone for Flights<T> {
    fn clone(&self) -> Self {
        Flights {
            map: self.map.clone(),
        }
    }
}

impl<T> Flights<T> {
    /// Becomes the leader for `key`, or a follower of the current leader.
    pub(crate) fn acquire(&self, key: &str, timeout: Duration) -> Flight<T> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(key) {
            if rx.borrow().running() {
                return Flight::Follower(FlightWaiter {
                    rx: rx.clone(),
                    timeout,
                });
            }
        }
        let (tx, rx) = watch::channel(FlightState::Running(None));
        map.insert(key.to_owned(), rx);
        Flight::Leader(FlightGuard {
            flights: self.clone(),
            key: key.to_owned(),
            tx,
        })
    }

    /// A waiter on the running fetch for `key`, if there is one; never
    /// becomes the leader (for requests that would not store anyway).
    pub(crate) fn follow(&self, key: &str, timeout: Duration) -> Option<FlightWaiter<T>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key)
            .filter(|rx| rx.borrow().running())
            .map(|rx| FlightWaiter {
                rx: rx.clone(),
                timeout,
            })
    }

    /// Number of fetches in flight.
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether a caller leads the fetch for a key or follows it (the store's
/// `lock`).
#[derive(Debug)]
pub enum Flight<T> {
    /// This caller fetches; followers wait on its guard.
    Leader(FlightGuard<T>),
    /// Another caller is fetching; wait for it.
    Follower(FlightWaiter<T>),
}

/// Held by the leader. Dropping it without [`FlightGuard::finish`] tells
/// followers the fetch failed.
#[derive(Debug)]
pub struct FlightGuard<T> {
    flights: Flights<T>,
    key: String,
    tx: watch::Sender<FlightState<T>>,
}

impl<T> FlightGuard<T> {
    /// Lets followers read along with the download while it is written.
    pub fn publish(&self, download: T) {
        self.tx.send_replace(FlightState::Running(Some(download)));
    }

    /// Releases followers: `committed` says whether an entry is now stored.
    pub fn finish(self, committed: bool) {
        let state = if committed {
            FlightState::Committed
        } else {
            FlightState::Failed
        };
        self.tx.send_replace(state);
        // Drop removes the map entry.
    }
}

impl<T> Drop for FlightGuard<T> {
    fn drop(&mut self) {
        if self.tx.borrow().running() {
            self.tx.send_replace(FlightState::Failed);
        }
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// Held by a follower.
#[derive(Debug)]
pub struct FlightWaiter<T> {
    rx: watch::Receiver<FlightState<T>>,
    timeout: Duration,
}

impl<T> FlightWaiter<T> {
    /// Waits until the leader finishes, or the lock timeout passes.
    pub async fn wait(mut self) -> WaitOutcome {
        let done = self.rx.wait_for(|s| !s.running());
        match tokio::time::timeout(self.timeout, done).await {
            Ok(Ok(state)) if matches!(*state, FlightState::Committed) => WaitOutcome::Committed,
            Ok(_) => WaitOutcome::Failed,
            Err(_) => WaitOutcome::TimedOut,
        }
    }
}

impl<T: Clone> FlightWaiter<T> {
    /// Waits until the leader is writing the body (then reads along with
    /// it), or finishes, or the lock timeout passes.
    /// A follower that cannot use the download (another `Vary` variant)
    /// can still [`FlightWaiter::wait`] for the commit afterwards.
    pub async fn download(&mut self) -> Following<T> {
        let started = self
            .rx
            .wait_for(|s| !matches!(s, FlightState::Running(None)));
        match tokio::time::timeout(self.timeout, started).await {
            Ok(Ok(state)) => match &*state {
                FlightState::Running(Some(download)) => Following::Download(download.clone()),
                FlightState::Committed => Following::Done(WaitOutcome::Committed),
                _ => Following::Done(WaitOutcome::Failed),
            },
            Ok(Err(_)) => Following::Done(WaitOutcome::Failed),
            Err(_) => Following::Done(WaitOutcome::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn followers_learn_of_a_commit() {
        let flights = Flights::<()>::default();
        let Flight::Leader(guard) = flights.acquire("k", SECOND) else {
            panic!("first caller leads");
        };
        let Flight::Follower(waiter) = flights.acquire("k", SECOND) else {
            panic!("second caller follows");
        };
        let waiting = tokio::spawn(waiter.wait());
        guard.finish(true);
        assert_eq!(waiting.await.unwrap(), WaitOutcome::Committed);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn dropping_the_guard_fails_followers_and_frees_the_key() {
        let flights = Flights::<()>::default();
        let leader = flights.acquire("k", SECOND);
        let Flight::Follower(waiter) = flights.acquire("k", SECOND) else {
            panic!("second caller follows");
        };
        drop(leader);
        assert_eq!(waiter.wait().await, WaitOutcome::Failed);
        assert!(matches!(flights.acquire("k", SECOND), Flight::Leader(_)));
    }

    #[tokio::test]
    async fn following_without_a_fetch_in_flight_does_not_lead() {
        let flights = Flights::<()>::default();
        assert!(flights.follow("k", SECOND).is_none());
        assert_eq!(flights.len(), 0);
        let Flight::Leader(guard) = flights.acquire("k", SECOND) else {
            panic!("first caller leads");
        };
        let waiter = flights.follow("k", SECOND).expect("a fetch is in flight");
        guard.finish(true);
        assert_eq!(waiter.wait().await, WaitOutcome::Committed);
    }

    #[tokio::test]
    async fn followers_read_along_with_what_the_leader_publishes() {
        let flights = Flights::<&str>::default();
        let Flight::Leader(guard) = flights.acquire("k", SECOND) else {
            panic!("first caller leads");
        };
        let Flight::Follower(mut waiter) = flights.acquire("k", SECOND) else {
            panic!("second caller follows");
        };
        let following = tokio::spawn(async move { waiter.download().await });
        guard.publish("the download");
        assert!(matches!(
            following.await.unwrap(),
            Following::Download("the download")
        ));
        guard.finish(true);
        assert!(matches!(flights.acquire("k", SECOND), Flight::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn followers_time_out() {
        let flights = Flights::<()>::default();
        let _leader = flights.acquire("k", SECOND);
        let Flight::Follower(waiter) = flights.acquire("k", SECOND) else {
            panic!("second caller follows");
        };
        assert_eq!(waiter.wait().await, WaitOutcome::TimedOut);
    }
}
