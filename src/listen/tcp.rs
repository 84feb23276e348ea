//! TCP listeners. Whether a non-loopback address is allowed was decided when
//! the configuration was validated.

use tokio::net::TcpListener;

use super::ListenError;
use super::TcpListener as TcpListenerConfig;

/// Binds a TCP listener as configured.
pub async fn bind_tcp(name: &str, cfg: &TcpListenerConfig) -> Result<TcpListener, ListenError> {
    if cfg.insecure && !cfg.address.ip().is_loopback() {
        tracing::warn!(
            listener = name,
            address = %cfg.address,
            "plain TCP on a non-loopback address: anyone who reaches it can use Docker through cistern"
        );
    }
    TcpListener::bind(cfg.address)
        .await
        .map_err(|source| ListenError::Io {
            listener: name.to_string(),
            what: "cannot bind",
            target: cfg.address.to_string(),
            source,
        })
}
