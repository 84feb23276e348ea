//! Listening sockets and serving them: unix sockets and TCP, plain or with
//! TLS.
//!
//! - binding ([`bind_unix`], [`bind_tcp`]) is done once at start so that
//!   every problem (a socket another process is serving, a port in use)
//!   stops cistern before it serves anything;
//! - [`serve`]: the one accept loop every listener runs, Docker's and the
//!   caching proxy's alike: caps, TLS handshakes, idle timeouts, shutdown;
//! - [`limit`]: how many connections one client may hold;
//! - [`tls`]: TLS listener files, reloaded on SIGHUP, and client
//!   certificates.

pub mod limit;
pub mod serve;
mod tcp;
pub mod tls;
mod unix;

pub use tcp::bind_tcp;
pub use tls::{ClientCert, TlsFiles};
pub use unix::{bind_unix, UnixSocket};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What a listener binds, as configured.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    Unix(UnixListener),
    Tcp(TcpListener),
}

#[derive(Debug, Clone)]
pub struct UnixListener {
    pub path: PathBuf,
    /// Permission bits applied to the socket file.
    pub mode: u32,
    /// Numeric owner and group, resolved from names at load time.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct TcpListener {
    pub address: SocketAddr,
    /// Set only when the operator explicitly accepted plain TCP on a
    /// non-loopback address.
    pub insecure: bool,
    /// TLS, with the files already read and checked.
    pub tls: Option<TlsListener>,
}

/// A TLS listener's files and the rustls configuration built from them when
/// the configuration was loaded.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub files: TlsFiles,
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
}

/// Who is at the other end of a connection, as far as the socket tells.
#[derive(Debug, Clone)]
pub enum Peer {
    /// Unix peer credentials of the connecting process.
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    /// Plain TCP.
    Tcp(SocketAddr),
    /// TCP with TLS, after the handshake: the client certificate rustls
    /// verified, on listeners that ask for one.
    Tls {
        addr: SocketAddr,
        client: Option<Arc<ClientCert>>,
    },
    Unknown,
}

impl Peer {
    /// The address of a TCP peer.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp(addr) | Peer::Tls { addr, .. } => Some(*addr),
            Peer::Unix { .. } | Peer::Unknown => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix { uid, gid, pid } => {
                write!(f, "uid={uid} gid={gid}")?;
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Tls { addr, client } => {
                write!(f, "{addr} tls")?;
                match client.as_deref().map(ClientCert::display_name) {
                    // Debug-quoted: a certificate name may hold anything.
                    Some(Some(name)) => write!(f, " client={name:?}"),
                    Some(None) => f.write_str(" client=(unnamed)"),
                    None => Ok(()),
                }
            }
            Peer::Unknown => f.write_str("unknown"),
        }
    }
}

/// Errors while setting up a listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listener {listener}: {path} is in use: another process is serving it")]
    InUse { listener: String, path: String },
    #[error("listener {listener}: {path} exists and is not a socket; refusing to replace it")]
    NotASocket { listener: String, path: String },
    #[error("listener {listener}: {what} {target}: {source}")]
    Io {
        listener: String,
        what: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
}
