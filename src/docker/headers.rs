//! Connection headers on the Docker side: whether a request switches
//! protocols, and what is stripped before forwarding (hop-by-hop headers,
//! RFC 9110 §7.6.1, and `Expect`). An upgrade keeps `Connection: Upgrade`
//! and `Upgrade`, because the daemon answers attach and exec with
//! `101 Switching Protocols` only when asked to.

use http::header::{self, HeaderMap};

/// Whether the request asks to switch protocols (`Connection: upgrade` plus an
/// `Upgrade` header), as the docker CLI does for attach and exec start.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has_token(headers, "upgrade")
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers ([`crate::http::headers::strip_hop_by_hop`])
/// and `Expect`: cistern answered any `Expect: 100-continue` itself.
/// With `keep_upgrade`, `Connection: Upgrade` and `Upgrade` stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    crate::http::headers::strip_hop_by_hop(headers, keep_upgrade);
    headers.remove(header::EXPECT);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn upgrade_is_detected_from_connection_token_and_upgrade_header() {
        assert!(wants_upgrade(&map(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "tcp")
        ])));
        assert!(wants_upgrade(&map(&[
            ("Connection", "keep-alive, upgrade"),
            ("Upgrade", "h2c")
        ])));
        assert!(!wants_upgrade(&map(&[("Upgrade", "tcp")])));
        assert!(!wants_upgrade(&map(&[("Connection", "Upgrade")])));
    }
}
