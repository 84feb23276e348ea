//! Cache routing: `ExtraHosts` entries `<cached domain>:<proxy address>` for
//! container creates and builds.
//!
//! The client's own entries are kept, in their order, and an entry of the
//! client's for a cached name wins: the job asked for that mapping (a test
//! double of the mirror, say), and `/etc/hosts` is no security boundary
//! anyway. Names compare case-insensitively, as resolvers read `/etc/hosts`.
//!
//! `/etc/hosts` maps exact names only: a cached domain's subdomains are
//! routed when they are learned (the caller's list holds them), others not.
//!
//! Builds (`POST /build`, classic builder) take extra hosts as repeated
//! `extrahosts=<host>:<ip>` query parameters (moby's `newImageBuildOptions`
//! reads `r.Form["extrahosts"]`); the daemon applies them to every `RUN`
//! container, and resolves `host-gateway` there too.

use crate::policy::Json;
use crate::wire::query::{escape, Query};

/// Host name of an `ExtraHosts` entry (`host:ip`, or `host=ip` in current moby).
fn host_name(entry: &str) -> &str {
    let cut = entry.find([':', '=']).unwrap_or(entry.len());
    entry[..cut].trim()
}

/// The entries to add for `domains`, leaving out names `existing` maps already.
pub fn missing(existing: &[&str], domains: &[String], address: &str) -> Vec<String> {
    domains
        .iter()
        .filter(|d| {
            !existing
                .iter()
                .any(|e| host_name(e).eq_ignore_ascii_case(d))
        })
        .map(|d| format!("{d}:{address}"))
        .collect()
}

/// Adds the cached domains to `HostConfig.ExtraHosts` of a canonical create
/// body; returns how many entries were added.
pub fn container_create(body: &mut Json, domains: &[String], address: &str) -> usize {
    let hc = body.object_mut("HostConfig");
    let mut hosts: Vec<String> = hc
        .get("ExtraHosts")
        .map(|a| a.strings().map(str::to_string).collect())
        .unwrap_or_default();
    let existing: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let added = missing(&existing, domains, address);
    let n = added.len();
    if n > 0 {
        hosts.extend(added);
        hc.set("ExtraHosts", Json::string_array(hosts));
    }
    n
}

/// The build query with `extrahosts` pairs appended for the cached domains the
/// client did not map. `None` when nothing changes or the query cannot be read
/// (the policy stage refuses unreadable queries before this runs).
pub fn build_query(query: &str, domains: &[String], address: &str) -> Option<String> {
    let parsed = Query::parse(query).ok()?;
    let existing: Vec<&str> = parsed.values("extrahosts").collect();
    let added = missing(&existing, domains, address);
    if added.is_empty() {
        return None;
    }
    let mut out = query.to_string();
    for entry in added {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str("extrahosts=");
        out.push_str(&escape(&entry));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json;

    fn domains() -> Vec<String> {
        vec!["pkgs.example".into(), "mirror.example.test".into()]
    }

    #[test]
    fn create_keeps_client_entries_and_a_client_mapping_wins() {
        let mut body = json::parse(
            br#"{"Image":"x","HostConfig":{"ExtraHosts":["other:10.0.0.1","PKGS.example=127.0.0.1"]}}"#,
        )
        .unwrap();
        assert_eq!(container_create(&mut body, &domains(), "host-gateway"), 1);
        assert_eq!(
            body.at(&["HostConfig", "ExtraHosts"])
                .unwrap()
                .strings()
                .collect::<Vec<_>>(),
            [
                "other:10.0.0.1",
                "PKGS.example=127.0.0.1",
                "mirror.example.test:host-gateway"
            ]
        );
    }

    #[test]
    fn create_without_host_config_gets_one() {
        let mut body = json::parse(br#"{"Image":"x"}"#).unwrap();
        assert_eq!(container_create(&mut body, &domains(), "10.1.2.3"), 2);
        assert_eq!(
            body.at(&["HostConfig", "ExtraHosts"])
                .unwrap()
                .strings()
                .collect::<Vec<_>>(),
            ["pkgs.example:10.1.2.3", "mirror.example.test:10.1.2.3"]
        );
    }

    #[test]
    fn build_query_appends_repeated_extrahosts() {
        assert_eq!(
            build_query("t=app&extrahosts=pkgs.example%3A1.2.3.4", &domains(), "host-gateway")
                .as_deref(),
            Some("t=app&extrahosts=pkgs.example%3A1.2.3.4&extrahosts=mirror.example.test%3Ahost-gateway")
        );
        assert_eq!(
            build_query("", &domains(), "host-gateway").as_deref(),
            Some("extrahosts=pkgs.example%3Ahost-gateway&extrahosts=mirror.example.test%3Ahost-gateway")
        );
        assert_eq!(
            build_query(
                "extrahosts=pkgs.example:1.1.1.1&extrahosts=mirror.example.test:1.1.1.1",
                &domains(),
                "host-gateway"
            ),
            None
        );
    }
}
