//! A client connection to the caching proxy, as the request handler and
//! the per-request log see it.

use std::net::SocketAddr;

/// The scheme a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// TLS-terminated HTTPS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One of the caching proxy's listeners.
#[derive(Debug, Clone, Copy)]
pub struct ListenerInfo {
    /// `http`, `https` or `forward`, for the log.
    pub name: &'static str,
    /// The scheme it serves.
    pub scheme: Scheme,
}

/// What the handler knows about a client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The listener: `http`, `https` or `forward`.
    pub listener: &'static str,
    /// The listener's scheme.
    pub scheme: Scheme,
    /// The TLS server name the client asked for.
    pub sni: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
}
