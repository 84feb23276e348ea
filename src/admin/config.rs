//! Where the admin listener listens, as validated from the top-level
//! `admin:` section (the raw section and its checks are the config room's).

use std::net::SocketAddr;

use crate::listen::UnixListener;

/// The default: loopback only.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9477);

/// The default mode of an admin unix socket: its owner only.
pub const DEFAULT_MODE: u32 = 0o600;

/// The admin listener's socket.
#[derive(Debug, Clone)]
pub enum AdminConfig {
    /// TCP; off loopback only with `insecure: true`.
    Tcp(SocketAddr),
    /// A unix socket, mode 0600 unless configured.
    Unix(UnixListener),
}

impl std::fmt::Display for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminConfig::Tcp(address) => write!(f, "{address}"),
            AdminConfig::Unix(unix) => write!(f, "{}", unix.path.display()),
        }
    }
}
