//! Why injecting into a container failed, and which side is to blame.

use http::StatusCode;

use crate::daemon::error::{DockerError, Side};

/// An injection failure. Never carries key material: only paths, statuses and
/// the daemon's messages.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InjectError {
    /// The daemon refused an operation because of the container itself (e.g.
    /// `ReadonlyRootfs`): 4xx.
    #[error("{what}: the daemon answered {status}: {message}")]
    Container {
        what: String,
        status: StatusCode,
        message: String,
    },
    /// The container's configuration leaves no place to put the CA (a mount
    /// over `/etc/cistern`, say).
    #[error("{0}")]
    Layout(String),
    /// The daemon failed or answered something unreadable.
    #[error("{0}")]
    Daemon(String),
    /// cistern failed (no valid CA, ...).
    #[error("{0}")]
    Internal(String),
}

impl InjectError {
    /// A non-success answer to `what`.
    pub fn refused(status: StatusCode, what: String, message: String) -> InjectError {
        if status.is_client_error() {
            InjectError::Container {
                what,
                status,
                message,
            }
        } else {
            InjectError::Daemon(format!("{what}: the daemon answered {status}: {message}"))
        }
    }

    /// A call to the daemon that failed: cistern's own failure (a request
    /// it cannot build) or the daemon's.
    pub fn from_call(err: DockerError) -> InjectError {
        match err.side {
            Side::Internal => InjectError::Internal(err.message),
            Side::Client | Side::Upstream | Side::AsDaemon => InjectError::Daemon(err.message),
        }
    }

    /// The status a refused create is answered with: 409 when the container's
    /// own configuration is in the way, 502/500 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            InjectError::Container { .. } | InjectError::Layout(_) => StatusCode::CONFLICT,
            InjectError::Daemon(_) => StatusCode::BAD_GATEWAY,
            InjectError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
