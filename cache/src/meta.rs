//! What is stored beside each body in the index entry.
//!
//! [`Meta`] is serialised as JSON into cacache's per-entry metadata, so an
//! index lookup returns everything needed to answer a request without
//! touching the body: status, the origin's response headers, the serialised
//! http-cache-semantics [`CachePolicy`] (which carries the request headers
//! that `Vary` compares against), when it was stored, the body size and its
//! integrity hash.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::rules::Mode;

/// Metadata stored with a cache entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The normalised URL (the key without its method), for `purge`.
    pub url: String,
    /// The origin's response status.
    #[serde(with = "status_serde")]
    pub status: StatusCode,
    /// The origin's response headers, as received.
    #[serde(with = "headers_serde")]
    pub headers: HeaderMap,
    /// The freshness policy, updated on every successful revalidation.
    pub policy: CachePolicy,
    /// The rule mode the entry was stored under.
    pub mode: Mode,
    /// When the body was stored or last revalidated, in Unix milliseconds.
    pub stored_at_ms: u64,
    /// Body size in bytes.
    pub size: u64,
    /// Subresource-integrity hash of the body (`sha256-…`); empty until
    /// the write is committed.
    pub integrity: String,
    /// Fast checksum of the body (`xxh3-128:<hex>`), computed at commit
    /// and checked on every whole read; the SHA-256 `integrity` stays the
    /// content address (so dedup cannot be fooled by a crafted collision).
    /// Entries stored before it existed have none and are checked against
    /// `integrity` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The `xxh3-64` of each 256 KiB block of the body, 16 hex digits each,
    /// computed at commit: streamed reads check every block before it is
    /// sent and ranges check the blocks they touch. Entries stored before it
    /// existed have none and are checked whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<String>,
}

impl Meta {
    /// When the entry was stored or last revalidated.
    pub fn stored_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.stored_at_ms)
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

mod status_serde {
    use http::StatusCode;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(status.as_u16())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StatusCode, D::Error> {
        StatusCode::from_u16(u16::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Header values may hold any byte except controls; they are stored one
/// char per byte (Latin-1), which is lossless and stays readable for the
/// ASCII values that make up nearly every header.
mod headers_serde {
    use super::*;
    use serde::{de::Error as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(headers: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&str, String)> = headers
            .iter()
            .map(|(name, value)| {
                let text = value.as_bytes().iter().map(|&b| char::from(b)).collect();
                (name.as_str(), text)
            })
            .collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        let mut headers = HeaderMap::with_capacity(pairs.len());
        for (name, text) in pairs {
            let bytes = text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(D::Error::custom))
                .collect::<Result<Vec<u8>, _>>()?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(D::Error::custom)?;
            let value = HeaderValue::from_bytes(&bytes).map_err(D::Error::custom)?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};

    #[test]
    fn meta_round_trips_through_json_including_opaque_header_bytes() {
        let req = Request::get("https://a.example.test/x").body(()).unwrap();
        let res = Response::builder()
            .header("cache-control", "max-age=60")
            .header("x-opaque", HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .header("set-thing", "a")
            .header("set-thing", "b")
            .body(())
            .unwrap();
        let meta = Meta {
            url: "https://a.example.test/x".into(),
            status: StatusCode::OK,
            headers: res.headers().clone(),
            policy: CachePolicy::new(&req, &res),
            mode: Mode::Default,
            stored_at_ms: 1_700_000_000_000,
            size: 5,
            integrity: "sha256-abc".into(),
            check: None,
            blocks: None,
        };
        let json = serde_json::to_value(&meta).unwrap();
        let back: Meta = serde_json::from_value(json).unwrap();
        assert_eq!(back.headers, meta.headers);
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(back.stored_at(), meta.stored_at());
        assert_eq!(back.headers.get_all("set-thing").iter().count(), 2);
    }
}
