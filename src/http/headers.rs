//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not
//! the message, and a proxy must not forward them. Both sides strip them
//! from what they forward, in either direction.

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

/// Removes hop-by-hop headers, including those the `Connection` header
/// names, and `Upgrade`. With `keep_upgrade` (a request that switches
/// protocols, and its `101` answer), `Upgrade` stays and `Connection` is
/// set to `Upgrade`.
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
        let header = |(k, v): &(&str, &str)| {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
            (name, HeaderValue::from_str(v).unwrap())
        };
        pairs.iter().map(header).collect()
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
