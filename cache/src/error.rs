//! The crate's error type.
//!
//! Every fallible call in `cistern-cache` returns [`Error`]. The variants are
//! shaped for the proxy's decisions rather than for the storage layer's
//! internals:
//!
//! - [`Error::DiskFull`] and [`Error::Io`] on a write: abort the write, serve
//!   the response straight from origin and log; reads keep working.
//! - [`Error::Corrupt`] on a read: the entry has already been dropped from the
//!   index; treat it as a miss and refetch. Never serve the bytes.
//! - [`Error::LengthMismatch`]: the origin body was cut short (or ran long);
//!   nothing was committed.

use std::io;

/// `ENOSPC` on Linux and the BSDs: no space left on device.
const ENOSPC: i32 = 28;
/// `EDQUOT` on Linux: disk quota exceeded. Treated like a full disk.
const EDQUOT: i32 = 122;

/// Errors from the cache store and its maintenance functions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filesystem holding the cache has no space (or quota) left.
    #[error("cache disk is full while {op}")]
    DiskFull {
        /// What the cache was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Any other I/O failure in the cache directory.
    #[error("cache I/O failed while {op}")]
    Io {
        /// What the cache was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Stored content did not match its integrity hash (or has vanished).
    /// The index entry has been removed; the caller should treat this as a
    /// miss.
    #[error("cached content for {key} failed its integrity check and was dropped")]
    Corrupt {
        /// The request key whose entry was dropped.
        key: String,
    },

    /// The body written did not have the length the origin announced.
    #[error("body length {actual} does not match the announced Content-Length {expected}")]
    LengthMismatch {
        /// The announced `Content-Length`.
        expected: u64,
        /// The number of bytes actually written.
        actual: u64,
    },

    /// A body without `Content-Length` grew past the largest object the
    /// store keeps; the write was aborted (the client is still served).
    #[error("body grew past the largest object the cache stores ({limit} bytes); not stored")]
    TooLarge {
        /// [`StoreConfig::max_object`](crate::StoreConfig::max_object).
        limit: u64,
    },

    /// A write was used after an earlier write to it had failed.
    #[error("cache write for {key} already failed and was aborted")]
    WriteAborted {
        /// The request key being written.
        key: String,
    },

    /// The metadata stored with an index entry could not be read back.
    #[error("stored metadata for {key} is unreadable")]
    Metadata {
        /// The request key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },

    /// The requested byte range lies outside the stored body.
    #[error("byte range {start}-{end} is outside a body of {size} bytes")]
    RangeNotSatisfiable {
        /// First byte requested.
        start: u64,
        /// Last byte requested (inclusive).
        end: u64,
        /// Size of the stored body.
        size: u64,
    },

    /// A configured rule is invalid.
    #[error("invalid cache rule: {0}")]
    InvalidRule(String),

    /// A request could not be turned into a cache key.
    #[error("cannot build a cache key: {0}")]
    InvalidKey(&'static str),

    /// Another `cistern cache gc` of the shared tier holds its lock.
    #[error(
        "another runner's gc of the shared cache tier is running (its lock was written {since})"
    )]
    SharedBusy {
        /// When its lock was written.
        since: String,
    },

    /// The shared tier (S3-compatible object storage) failed or timed out.
    /// The caller goes on with the local cache and the origin.
    #[error("shared cache tier failed while {op}")]
    Shared {
        /// What the tier was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A body did not hash to the content address it was fetched under
    /// (a corrupt or truncated object in the shared tier). Nothing was
    /// stored.
    #[error("body does not match its content address {expected}")]
    AddressMismatch {
        /// The content address it was fetched under.
        expected: String,
    },

    /// cacache reported an error that is not I/O or integrity related.
    #[error("cache index operation failed while {op}")]
    Store {
        /// What the cache was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: cacache::Error,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies an I/O error: a full disk becomes [`Error::DiskFull`],
    /// anything else [`Error::Io`].
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        if is_disk_full(&source) {
            Error::DiskFull { op, source }
        } else {
            Error::Io { op, source }
        }
    }

    /// Classifies a cacache error the same way, unwrapping its I/O cause.
    pub(crate) fn cacache(op: &'static str, source: cacache::Error) -> Self {
        match source {
            cacache::Error::IoError(io, _) => Error::io(op, io),
            other => Error::Store { op, source: other },
        }
    }

    /// True when the cache's filesystem is full: the proxy should serve from
    /// origin without storing, and log once.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }

    /// True when a stored entry failed verification and was dropped: the
    /// proxy should treat the request as a miss.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

/// Whether an I/O error means "no space left": `ENOSPC` or `EDQUOT`, also
/// when wrapped in another I/O error (as `tempfile` adds the path).
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    let full = |e: &io::Error| matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT));
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(e) = cause {
        if e.downcast_ref::<io::Error>().is_some_and(full) {
            return true;
        }
        cause = e.source();
    }
    full(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_classified_as_disk_full() {
        let err = Error::io("writing", io::Error::from_raw_os_error(ENOSPC));
        assert!(err.is_disk_full());
        assert_eq!(err.to_string(), "cache disk is full while writing");
    }

    #[test]
    fn a_wrapped_enospc_is_disk_full_too() {
        let wrapped = io::Error::other(io::Error::from_raw_os_error(ENOSPC));
        assert!(Error::io("writing", wrapped).is_disk_full());
    }

    #[test]
    fn other_io_errors_are_plain_io() {
        let err = Error::io("writing", io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!err.is_disk_full());
        assert!(matches!(err, Error::Io { .. }));
    }

    #[test]
    fn cacache_io_errors_keep_their_classification() {
        let inner = cacache::Error::IoError(io::Error::from_raw_os_error(ENOSPC), "ctx".into());
        assert!(Error::cacache("committing", inner).is_disk_full());
    }
}
