//! A request body on its way to the daemon: the bytes as the client sent
//! them, or the one JSON value every stage edits.
//!
//! The policy parses a body it reads once ([`super::json::parse`]) and hands
//! on the canonical value; ownership, injection and jobs edit that value in
//! place, and the driver serialises it once, when it forwards the request.

use bytes::Bytes;

use super::json::{self, Json};
use super::Refusal;

/// A body read whole, before it is forwarded.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Forwarded as the client sent it (possibly empty): a body cistern has
    /// no schema for, or none at all.
    Raw(Bytes),
    /// Read, canonicalised and possibly edited: serialised when forwarded.
    Json(Json),
}

impl Body {
    /// The empty body.
    pub fn empty() -> Body {
        Body::Raw(Bytes::new())
    }

    /// The value to edit: an empty body becomes `{}`; raw bytes (a body no
    /// stage has read yet) are parsed here.
    pub fn json_mut(&mut self) -> Result<&mut Json, Refusal> {
        if let Body::Raw(bytes) = self {
            let value = if bytes.iter().all(u8::is_ascii_whitespace) {
                Json::Object(Vec::new())
            } else {
                json::parse(bytes)?
            };
            *self = Body::Json(value);
        }
        match self {
            Body::Json(value) => Ok(value),
            // Replaced just above: never taken.
            Body::Raw(_) => Err(Refusal::malformed(
                "body",
                String::new(),
                "cistern: the request body could not be read".into(),
            )),
        }
    }

    /// The value, when the body was read as JSON.
    pub fn as_json(&self) -> Option<&Json> {
        match self {
            Body::Json(value) => Some(value),
            Body::Raw(_) => None,
        }
    }

    /// The bytes it stands for, leaving it as it is (for logs and tests; the
    /// driver forwards with [`Body::into_bytes`]).
    pub fn to_bytes(&self) -> Bytes {
        self.clone().into_bytes()
    }

    /// The bytes to forward: a JSON value is serialised here.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Body::Raw(bytes) => bytes,
            Body::Json(value) => Bytes::from(value.to_vec()),
        }
    }
}
