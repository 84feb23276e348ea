//! DNS names: normalising configured domains and requested hosts, and the subtree match
//! that mirrors the CA's name constraints.
//!
//! RFC 5280 §4.2.1.10: a dNSName constraint `example.test` is satisfied by `example.test`
//! itself and by any name formed by adding labels on the left (`a.b.example.test`), but not
//! by `badexample.test`. [`permits`] implements exactly that so issuance refuses what a
//! client's verifier would refuse. Not here: wildcards (a leaf is issued per SNI name) and IP
//! addresses (the caching proxy only intercepts named repository hosts).

use std::net::IpAddr;

use crate::error::{Error, Result};

/// Longest DNS name in presentation form (RFC 1035 §2.3.4, without the root dot).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Lower-cases `name`, drops one trailing root dot and checks it is a plain host name.
fn normalise(name: &str) -> std::result::Result<String, &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 253 characters");
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("IP addresses are not supported");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// Normalises a configured cached domain (the root of a permitted subtree).
pub(crate) fn domain(domain: &str) -> Result<String> {
    normalise(domain).map_err(|reason| Error::InvalidDomain {
        domain: domain.to_owned(),
        reason,
    })
}

/// Normalises a host name a leaf is requested for.
pub(crate) fn host(host: &str) -> Result<String> {
    normalise(host).map_err(|reason| Error::InvalidHost {
        host: host.to_owned(),
        reason,
    })
}

/// Whether normalised `host` lies in the subtree rooted at normalised `domain`.
pub(crate) fn in_subtree(host: &str, domain: &str) -> bool {
    match host.strip_suffix(domain) {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.'),
        None => false,
    }
}

/// Whether normalised `host` lies in any of the permitted `domains`.
pub(crate) fn permits(domains: &[String], host: &str) -> bool {
    domains.iter().any(|d| in_subtree(host, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_permits_itself_and_subdomains_only() {
        let domains = vec!["example.test".to_owned()];
        assert!(permits(&domains, "example.test"));
        assert!(permits(&domains, "deb.example.test"));
        assert!(permits(&domains, "a.b.example.test"));
        assert!(!permits(&domains, "badexample.test"));
        assert!(!permits(&domains, "example.test.evil"));
        assert!(!permits(&domains, "test"));
    }

    #[test]
    fn names_are_lowercased_and_lose_the_root_dot() {
        assert_eq!(host("Deb.Example.TEST.").unwrap(), "deb.example.test");
        assert_eq!(domain("Example.test").unwrap(), "example.test");
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "*.example.test",
            "-a.test",
            "a_b.test",
            "127.0.0.1",
            "::1",
            "has space.test",
        ] {
            assert!(host(bad).is_err(), "{bad:?} accepted");
            assert!(domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(host(&format!("{}.test", "a".repeat(64))).is_err());
    }
}
