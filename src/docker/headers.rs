//! Hop-by-hop header handling (RFC 9110 §7.6.1): these describe one
//! connection, not the message, and must not be forwarded. An upgrade keeps
//! `Connection: Upgrade` and `Upgrade`, because the daemon answers attach and
//! exec with `101 Switching Protocols` only when asked to.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

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

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// With `keep_upgrade`, `Connection: Upgrade` and `Upgrade` stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
    // The proxy answered any `Expect: 100-continue` itself.
    headers.remove(header::EXPECT);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/json"),
            ("X-Registry-Auth", "abc"),
            ("Upgrade", "tcp"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, vec!["content-type", "x-registry-auth"]);
    }

    #[test]
    fn upgrade_requests_keep_their_upgrade_headers() {
        let mut h = map(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "tcp"),
            ("TE", "trailers"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("connection").unwrap(), "Upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "tcp");
        assert!(h.get("te").is_none());
    }
}
