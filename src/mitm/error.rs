//! Errors of the caching proxy, shaped by which side failed: that decides
//! the status the client gets and the log level.

use std::net::{Ipv4Addr, SocketAddr};

use crate::http::BoxError;

/// Why the caching proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// `http`, `https`, `admin` or `forward proxy`.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No listen address is configured and the address containers reach
    /// the host at could not be found (the proxy never falls back to every
    /// address).
    #[error("cannot find the address containers reach the host at: {source}; set caching.proxy.http and caching.proxy.https to where the proxy should listen, and caching.inject.address if containers reach it at another address")]
    NoListenAddress {
        /// What was missing.
        #[source]
        source: AddressError,
    },
    /// The cache directory could not be opened.
    #[error("cache directory: {0}")]
    Cache(#[source] cistern_cache::Error),
    /// The shared cache tier's settings are unusable (credentials missing,
    /// a bad endpoint).
    #[error("shared cache tier: {0}")]
    Shared(String),
    /// Origin trust roots or TLS settings are unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why the address containers reach the host at could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The daemon did not describe its default bridge network.
    #[error("inspecting the daemon's bridge network: {0}")]
    Daemon(String),
    /// The inspect answer is not a network description.
    #[error("the daemon's bridge network inspect is not a JSON object")]
    BadInspect,
    /// The gateway the daemon reports is not on this host.
    #[error("the bridge network's gateway {gateway} is not an address of this host (daemon on another host, or in another network namespace?)")]
    GatewayNotLocal {
        /// The reported gateway.
        gateway: Ipv4Addr,
    },
    /// No gateway reported, and the bridge's interface is not on this host.
    #[error("the bridge network reports no gateway and this host has no interface {name} (daemon on another host, or in another network namespace?)")]
    NoInterface {
        /// The interface the network names.
        name: String,
    },
    /// The bridge's interface has no IPv4 address in the bridge's subnets.
    #[error("the bridge network reports no gateway and its interface {name} has no IPv4 address in {subnets}")]
    NoAddress {
        /// The interface.
        name: String,
        /// The bridge's subnets, as the daemon wrote them.
        subnets: String,
    },
    /// The host's interfaces could not be listed.
    #[error("listing the host's network interfaces: {0}")]
    Interfaces(String),
}

/// A failure on the request path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we refuse (unknown host, SNI mismatch...).
    #[error("{message}")]
    Client {
        /// Status to answer with.
        status: http::StatusCode,
        /// Text for the client and the log.
        message: String,
    },
    /// The origin could not be reached or failed.
    #[error("origin {host}: {source}")]
    Origin {
        /// The origin's host name.
        host: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
}

impl ProxyError {
    /// The status a client gets for this error.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ProxyError::Client { status, .. } => *status,
            ProxyError::Origin { .. } => http::StatusCode::BAD_GATEWAY,
        }
    }
}
