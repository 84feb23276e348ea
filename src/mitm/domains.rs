//! Which hosts the caching proxy serves: the configured domains and their
//! subdomains, nothing else (it is never an open proxy).
//!
//! Also the small parsing of a request's authority (`host[:port]`) that the
//! handler needs to compare it with the configured domains and the TLS SNI.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::discover::Found;

/// The cached domains, normalised (lower case, no trailing dot).
#[derive(Debug, Clone)]
pub struct Domains {
    domains: Vec<String>,
}

impl Domains {
    /// Normalises the configured list.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(domains: I) -> Self {
        let mut domains: Vec<String> = domains
            .into_iter()
            .map(|d| normalise(d.as_ref()))
            .filter(|d| !d.is_empty())
            .collect();
        domains.sort();
        domains.dedup();
        Domains { domains }
    }

    /// The configured domain `host` falls under (itself or a subdomain of
    /// it), the longest one when several do; `None` when it is not cached.
    pub fn matching(&self, host: &str) -> Option<&str> {
        let host = normalise(host);
        self.domains
            .iter()
            .filter(|d| {
                host == **d
                    || (host.len() > d.len()
                        && host.ends_with(d.as_str())
                        && host.as_bytes()[host.len() - d.len() - 1] == b'.')
            })
            .max_by_key(|d| d.len())
            .map(String::as_str)
    }

    /// All configured domains.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(String::as_str)
    }
}

/// Why a found host is not in the cached set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftOut {
    /// `discover.allow` does not admit it, or `discover.deny` names it.
    Filtered,
    /// Over `discover.max_hosts`.
    OverLimit,
}

/// The learned part of the cached set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Learned {
    /// Hosts added to the cached set, each with every place it was found.
    pub added: BTreeMap<String, Vec<Found>>,
    /// Hosts under a cached domain (served already, and in its CA's name
    /// constraints) that containers are now routed to the proxy for by
    /// name, as extra hosts map exact names only; with where each was
    /// found.
    pub routed: BTreeMap<String, Vec<Found>>,
    /// Hosts found but not added, and why.
    pub left_out: BTreeMap<String, LeftOut>,
}

/// Lower case, without a trailing dot.
pub fn normalise(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Splits an authority (`host`, `host:port`, `[v6]:port`) into its host
/// (normalised) and port. `None` when it is malformed.
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((normalise(host), Some(port.parse().ok()?))),
        None => Some((normalise(authority), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_covers_itself_and_its_subdomains_only() {
        let d = Domains::new(["Deb.Example.Test.", "example.test", "pypi.example"]);
        assert_eq!(d.matching("deb.example.test"), Some("deb.example.test"));
        assert_eq!(d.matching("a.deb.example.test"), Some("deb.example.test"));
        assert_eq!(d.matching("other.example.test"), Some("example.test"));
        assert_eq!(d.matching("EXAMPLE.TEST."), Some("example.test"));
        assert_eq!(d.matching("badexample.test"), None);
        assert_eq!(d.matching("pypi.example.evil"), None);
        assert_eq!(d.matching("example"), None);
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("Deb.Example.Test:8443"),
            Some(("deb.example.test".into(), Some(8443)))
        );
        assert_eq!(split_authority("a.test"), Some(("a.test".into(), None)));
        assert_eq!(split_authority("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_authority("a.test:x"), None);
        assert_eq!(split_authority(""), None);
    }
}
