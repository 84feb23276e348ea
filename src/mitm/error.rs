//! Errors of the caching proxy, shaped by which side failed: that decides
//! the status the client gets and the log level.

use std::net::SocketAddr;

/// Boxed error carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
        source: super::address::AddressError,
    },
    /// The cache directory could not be opened.
    #[error("cache directory: {0}")]
    Cache(#[source] cistern_cache::Error),
    /// Origin trust roots or TLS settings are unusable.
    #[error("TLS: {0}")]
    Tls(String),
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
