//! How many connections one client address may hold open at once.
//!
//! The idle timeout closes connections that do nothing, but a client that
//! keeps asking (or an HTTP/2 client answering pings) could still open
//! connections until cistern runs out of file descriptors, for every job on
//! the runner. Each container has an address of its own on its network, so
//! a cap per address bounds what one job can hold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The open connections per client address.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    limit: Arc<ConnectionLimit>,
    ip: IpAddr,
}

impl ConnectionLimit {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max,
            open: Mutex::default(),
        })
    }

    /// A place for a new connection from `ip`, or `None` when it already
    /// holds the maximum.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        if *count == self.max {
            tracing::warn!(client = %ip, max = self.max, "client holds caching.proxy.max_connections_per_client connections; more are refused until some close");
        }
        Some(Slot {
            limit: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_at_most_max_and_closing_frees_a_place() {
        let limit = ConnectionLimit::new(2);
        let a: IpAddr = "172.17.0.2".parse().unwrap();
        let b: IpAddr = "172.17.0.3".parse().unwrap();
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none(), "a third from the same address");
        let _other = limit.admit(b).expect("another address has its own places");
        drop(first);
        assert!(
            limit.admit(a).is_some(),
            "a closed connection frees its place"
        );
    }
}
