//! Why the cache did what it did: enums that log themselves.
//!
//! Each decision in the caching path carries one of these, so a log line
//! reads `cache=bypass reason="request carries Authorization"` rather than a
//! bare boolean. They are `Copy` and cheap to put in `tracing` fields via
//! their `Display`.

use std::fmt;

/// Why a request skips the cache entirely (forward it untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Only `GET` and `HEAD` are served from or stored in the cache.
    MethodNotCacheable,
    /// A configured or built-in rule says `bypass`.
    Rule,
    /// The request carries credentials; a shared cache must not hand one
    /// client's authorised response to another.
    Authorization,
    /// The request could not be turned into a cache key (no host).
    Unkeyable,
}

impl fmt::Display for BypassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BypassReason::MethodNotCacheable => "method is not cacheable",
            BypassReason::Rule => "a rule says bypass",
            BypassReason::Authorization => "request carries Authorization",
            BypassReason::Unkeyable => "request has no usable URL",
        })
    }
}

/// Why a stored entry was served without asking the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitReason {
    /// It is fresh (by the origin's headers, or an `immutable` rule).
    Fresh,
    /// An always-revalidate entry without validators (no `ETag`, no
    /// `Last-Modified`), stored this many seconds ago, within the
    /// unvalidated window: asking the origin would download it whole again.
    Unvalidated {
        /// Seconds since it was downloaded.
        age_secs: u64,
    },
}

impl fmt::Display for HitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HitReason::Fresh => f.write_str("fresh"),
            HitReason::Unvalidated { age_secs } => write!(
                f,
                "index without validators downloaded {age_secs}s ago, within the unvalidated window"
            ),
        }
    }
}

/// Why a lookup found nothing usable (fetch from origin, then maybe store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    /// No entry under this key.
    NotCached,
    /// An entry exists but was stored for different `Vary` header values
    /// (or `Vary: *`).
    VaryMismatch,
    /// The entry failed its integrity check and was dropped.
    Corrupt,
    /// The entry's metadata could not be read and was dropped.
    BadMetadata,
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MissReason::NotCached => "not cached",
            MissReason::VaryMismatch => "stored variant does not match Vary",
            MissReason::Corrupt => "stored content was corrupt and was dropped",
            MissReason::BadMetadata => "stored metadata was unreadable and was dropped",
        })
    }
}

/// Why an origin response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStoreReason {
    /// A rule says bypass.
    Rule,
    /// Only complete `200 OK` bodies are stored.
    Status(u16),
    /// `HEAD` responses have no body to store.
    HeadRequest,
    /// The client asked for a range; the origin's partial answer is not a
    /// whole body.
    RangeRequest,
    /// `Cache-Control: no-store` on the response.
    NoStoreResponse,
    /// `Cache-Control: no-store` on the request.
    NoStoreRequest,
    /// `Cache-Control: private`: only the client may keep it.
    PrivateResponse,
    /// `Vary: *` can never match a later request.
    VaryStar,
    /// The response sets a cookie (`Set-Cookie`), so its body may be made
    /// for the client whose request reached the origin; only an
    /// `immutable` rule stores such a response (without the cookie).
    SetsCookie,
    /// http-cache-semantics says the response is not storable for another
    /// reason (e.g. authorised request without `public`).
    NotStorable,
    /// Its `Content-Length` is above the largest object the store keeps
    /// ([`StoreConfig::max_object`](crate::StoreConfig::max_object)).
    TooLarge,
}

impl fmt::Display for NoStoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoStoreReason::Rule => f.write_str("a rule says bypass"),
            NoStoreReason::Status(s) => write!(f, "status {s} is not stored"),
            NoStoreReason::HeadRequest => f.write_str("HEAD response has no body"),
            NoStoreReason::RangeRequest => f.write_str("range request gets a partial body"),
            NoStoreReason::NoStoreResponse => f.write_str("response says no-store"),
            NoStoreReason::NoStoreRequest => f.write_str("request says no-store"),
            NoStoreReason::PrivateResponse => f.write_str("response is private"),
            NoStoreReason::VaryStar => f.write_str("response varies on *"),
            NoStoreReason::SetsCookie => {
                f.write_str("response sets a cookie (only immutable rules store it)")
            }
            NoStoreReason::NotStorable => f.write_str("response is not storable"),
            NoStoreReason::TooLarge => f.write_str("body is larger than max_object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_display_as_readable_text() {
        assert_eq!(
            NoStoreReason::PrivateResponse.to_string(),
            "response is private"
        );
        assert_eq!(
            NoStoreReason::Status(404).to_string(),
            "status 404 is not stored"
        );
        assert_eq!(
            BypassReason::Authorization.to_string(),
            "request carries Authorization"
        );
        assert_eq!(
            MissReason::VaryMismatch.to_string(),
            "stored variant does not match Vary"
        );
    }
}
