//! How many connections one client may hold open at once.
//!
//! Idle timeouts close connections that do nothing, but a client that keeps
//! asking (or an HTTP/2 client answering pings, or a hijacked attach stream)
//! could still open connections until cistern runs out of file descriptors,
//! for every job on the runner. A cap per client bounds what one job can
//! hold. What "one client" is depends on the listener: an address for TCP
//! (each container has its own), a user on one unix socket (each job socket
//! is a socket of its own).

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long Docker API client connections may idle, and how many one client
/// may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// A connection that takes longer than this to send a request head, or
    /// sits idle this long between requests, is closed (default 2m).
    pub idle_timeout: Duration,
    /// Connections one client may hold at once, hijacked streams included
    /// (default 512): per address on TCP, per user on each unix socket.
    pub max_connections_per_client: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            idle_timeout: Duration::from_secs(120),
            max_connections_per_client: 512,
        }
    }
}

/// The open connections per client.
#[derive(Debug)]
pub struct ConnectionLimit<K> {
    max: usize,
    /// The configuration key that sets `max`, for the log.
    setting: &'static str,
    open: Mutex<HashMap<K, usize>>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq> {
    limit: Arc<ConnectionLimit<K>>,
    client: K,
}

impl<K: Hash + Eq + Clone + Display> ConnectionLimit<K> {
    /// At most `max` connections per client, as set by `setting`.
    pub fn new(max: usize, setting: &'static str) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max,
            setting,
            open: Mutex::default(),
        })
    }

    /// The most connections one client may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for a new connection from `client`, or `None` when it already
    /// holds the maximum.
    pub fn admit(self: &Arc<Self>, client: K) -> Option<Slot<K>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        if *count == self.max {
            tracing::warn!(%client, max = self.max, setting = self.setting, "a client holds the most connections allowed; more are refused until some close");
        }
        Some(Slot {
            limit: self.clone(),
            client,
        })
    }
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn each_client_holds_at_most_max_and_closing_frees_a_place() {
        let limit = ConnectionLimit::new(2, "test.max");
        let a: IpAddr = "172.17.0.2".parse().unwrap();
        let b: IpAddr = "172.17.0.3".parse().unwrap();
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none(), "a third from the same client");
        let _other = limit.admit(b).expect("another client has its own places");
        drop(first);
        assert!(
            limit.admit(a).is_some(),
            "a closed connection frees its place"
        );
        assert_eq!(limit.open.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_client_whose_connections_all_closed_is_forgotten() {
        let limit = ConnectionLimit::new(1, "test.max");
        let slot = limit.admit("uid 1000".to_string()).unwrap();
        drop(slot);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
