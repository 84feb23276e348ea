//! How learned repository hosts join the cached set.
//!
//! [`crate::discover`] finds the hosts package managers download from; this
//! decides which of them the caching proxy serves: those the operator's
//! `caching.discover` allow and deny globs admit, not already covered by a
//! configured domain, at most `max_hosts` of them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::discover::{self, Filter, Found, Root};

use super::config::CachingConfig;
use super::domains::Domains;

/// Why a found host is not in the cached set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftOut {
    /// A configured domain covers it already (itself or a parent).
    Covered(String),
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
    /// Hosts found but not added, and why.
    pub left_out: BTreeMap<String, LeftOut>,
}

/// Splits what discovery found into hosts to add and hosts left out.
pub fn learn(config: &CachingConfig, found: &[Found]) -> Learned {
    let configured = Domains::new(&config.domains);
    let d = &config.discover;
    let filter = Filter::new(&d.allow, &d.deny, d.max_hosts);
    let mut learned = Learned::default();
    let mut candidates = Vec::new();
    for f in found {
        if let Some(domain) = configured.matching(&f.host) {
            learned
                .left_out
                .insert(f.host.clone(), LeftOut::Covered(domain.to_owned()));
        } else if !filter.admits(&f.host) {
            learned.left_out.insert(f.host.clone(), LeftOut::Filtered);
        } else {
            candidates.push(f.clone());
        }
    }
    let (kept, over) = filter.hosts(&candidates);
    for host in over {
        learned.left_out.insert(host, LeftOut::OverLimit);
    }
    for host in kept {
        let places = candidates
            .iter()
            .filter(|f| f.host == host)
            .cloned()
            .collect();
        learned.added.insert(host, places);
    }
    learned
}

impl CachingConfig {
    /// With `discover.host` on, reads the host's package-manager
    /// configuration (with this process's environment as theirs), adds the
    /// admitted hosts to `domains` and records what was learned in
    /// `learned` (for logs and `cistern cache domains`).
    pub fn learn_from_host(&mut self) -> &Learned {
        if self.discover.host {
            let env: discover::Env = std::env::vars().collect();
            let found = discover::find(&Root::new("/"), &env);
            let learned = learn(self, &found);
            self.domains.extend(learned.added.keys().cloned());
            self.learned = learned;
        }
        &self.learned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Tool;
    use crate::mitm::RawCaching;

    fn config(yaml: &str) -> CachingConfig {
        serde_yaml::from_str::<RawCaching>(yaml)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn found(host: &str) -> Found {
        Found {
            host: host.into(),
            tool: Tool::Apt,
            from: "/etc/apt/sources.list".into(),
        }
    }

    #[test]
    fn configured_domains_cover_learned_subdomains_and_filters_apply() {
        let cfg = config(
            "domains: [example.test]\ndiscover: { deny: ['*.internal.example'], max_hosts: 1 }\n",
        );
        let learned = learn(
            &cfg,
            &[
                found("deb.example.test"),
                found("pkgs.example"),
                found("repo.internal.example"),
                found("more.example"),
            ],
        );
        assert_eq!(learned.added.keys().collect::<Vec<_>>(), ["pkgs.example"]);
        assert_eq!(
            learned.left_out["deb.example.test"],
            LeftOut::Covered("example.test".into())
        );
        assert_eq!(learned.left_out["repo.internal.example"], LeftOut::Filtered);
        assert_eq!(learned.left_out["more.example"], LeftOut::OverLimit);
    }

    #[test]
    fn no_domains_are_needed_when_hosts_are_learned_but_one_is_without() {
        assert!(config("{}").domains.is_empty());
        let err = serde_yaml::from_str::<RawCaching>("discover: { host: false }")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("discover.host"), "{err}");
    }
}
