//! Refusals: what a client is told when its request cannot go on, and
//! whether audit mode may forward it anyway.

use http::StatusCode;

/// What to do with fields cistern does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// Refuse the request with 400, naming the field (the default).
    Refuse,
    /// Drop the field from the forwarded body and note it.
    Drop,
}

/// Whether a refusal may be forwarded anyway in audit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A policy decision: audit mode logs it and forwards.
    Policy,
    /// Input cistern cannot read unambiguously: always refused.
    Malformed,
}

/// A refused request: what the client is told and what the log records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub status: StatusCode,
    /// Stable rule name, e.g. `privileged`, `namespace_host`.
    pub rule: &'static str,
    /// The canonical field path (`HostConfig.Privileged`), query key or group.
    pub field: String,
    /// `cistern: ...`, shown to the Docker client.
    pub message: String,
    pub kind: RefusalKind,
}

impl Refusal {
    /// A 400 for input that cannot be read unambiguously.
    pub fn malformed(rule: &'static str, field: String, message: String) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            rule,
            field,
            message,
            kind: RefusalKind::Malformed,
        }
    }

    /// A 403 policy refusal with a finished message.
    pub fn policy(rule: &'static str, field: String, message: String) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            rule,
            field,
            message,
            kind: RefusalKind::Policy,
        }
    }

    /// The Docker-style error body.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }
}
