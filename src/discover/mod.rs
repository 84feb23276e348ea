//! Which package repositories the package managers of a file system use.
//!
//! The caching proxy caches the hosts it is told about. Operators should not
//! have to know them: the hosts a machine's (or an image's) package managers
//! download from are written in their configuration files, or built into the
//! tools themselves, in files those tools ship. This room reads them.
//!
//! Each ecosystem is one file with one `find` function over a [`Files`] view
//! (the host's root directory, or an image's files) and the environment.
//! Only hosts named by package-manager configuration or a tool's built-in
//! default are found, never a host a job merely contacts, and only names the
//! caching proxy can stand in for (see [`host_of`]).
//!
//! No I/O beyond reading the files through [`Files`]; no network.

mod apk;
mod apt;
mod cargo;
mod files;
mod gem;
mod go;
mod ini;
mod layers;
mod maven;
mod npm;
mod pip;
mod rpm;
mod url;

use std::collections::BTreeMap;
use std::fmt;

use cistern_cache::pattern::Glob;
use serde::{Deserialize, Serialize};

pub use cargo::index_config as cargo_index_config;
pub use files::{Files, NoFiles, Root};
pub use layers::Layers;
pub use url::host_of;

/// A package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Apt,
    Apk,
    Rpm,
    Pip,
    Npm,
    Cargo,
    Go,
    Maven,
    Gem,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Apt => "apt",
            Tool::Apk => "apk",
            Tool::Rpm => "yum/dnf",
            Tool::Pip => "pip",
            Tool::Npm => "npm",
            Tool::Cargo => "cargo",
            Tool::Go => "go",
            Tool::Maven => "maven",
            Tool::Gem => "gem",
        })
    }
}

/// One repository host and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Found {
    /// The host name, lower case, without a trailing dot.
    pub host: String,
    /// The package manager that downloads from it.
    pub tool: Tool,
    /// The file (or `env NAME`) that names it; for a built-in default, the
    /// tool's file it was read from.
    pub from: String,
}

/// The environment the package managers run with (`NAME` → value).
pub type Env = BTreeMap<String, String>;

/// Every repository host the package managers of `files` use, with `env`
/// as their environment. Sorted, one entry per (host, tool, from).
pub fn find(files: &dyn Files, env: &Env) -> Vec<Found> {
    let mut found = Vec::new();
    apt::find(files, &mut found);
    apk::find(files, &mut found);
    rpm::find(files, &mut found);
    pip::find(files, env, &mut found);
    npm::find(files, env, &mut found);
    cargo::find(files, env, &mut found);
    go::find(files, env, &mut found);
    maven::find(files, env, &mut found);
    gem::find(files, env, &mut found);
    found.sort();
    found.dedup();
    found
}

/// Records the host of `url`, if it is one the caching proxy can serve.
fn push(found: &mut Vec<Found>, url: &str, tool: Tool, from: &str) {
    if let Some(host) = host_of(url) {
        found.push(Found {
            host,
            tool,
            from: from.to_owned(),
        });
    }
}

/// The home directories whose per-user configuration counts: root's and
/// `$HOME`'s.
fn homes(env: &Env) -> Vec<String> {
    let mut homes = vec!["/root".to_owned()];
    if let Some(home) = env.get("HOME") {
        let home = home.trim_end_matches('/');
        if home.starts_with('/') && home != "/root" && !home.is_empty() {
            homes.push(home.to_owned());
        }
    }
    homes
}

/// Which learned hosts may join the cached set: `allow` globs (none: all),
/// then `deny` globs, at most `max` hosts.
#[derive(Debug, Clone)]
pub struct Filter {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
    max: usize,
}

impl Filter {
    /// A filter from host-name globs: `*.example.test` (`*` matches any run
    /// of characters, dots included), compared in lower case.
    pub fn new(allow: &[String], deny: &[String], max: usize) -> Self {
        let globs = |list: &[String]| {
            list.iter()
                .map(|g| Glob::new(&g.to_ascii_lowercase()))
                .collect()
        };
        Filter {
            allow: globs(allow),
            deny: globs(deny),
            max,
        }
    }

    /// Whether `host` passes the allow and deny lists.
    pub fn admits(&self, host: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|g| g.matches(host)))
            && !self.deny.iter().any(|g| g.matches(host))
    }

    /// The distinct admitted hosts of `found`, in order, at most `max`; the
    /// hosts dropped for the bound are returned second.
    pub fn hosts(&self, found: &[Found]) -> (Vec<String>, Vec<String>) {
        let mut kept: Vec<String> = Vec::new();
        let mut over = Vec::new();
        for f in found.iter().filter(|f| self.admits(&f.host)) {
            if kept.contains(&f.host) || over.contains(&f.host) {
                continue;
            }
            if kept.len() < self.max {
                kept.push(f.host.clone());
            } else {
                over.push(f.host.clone());
            }
        }
        (kept, over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(host: &str) -> Found {
        Found {
            host: host.into(),
            tool: Tool::Apt,
            from: "/etc/apt/sources.list".into(),
        }
    }

    #[test]
    fn the_filter_applies_allow_then_deny_then_the_bound() {
        let all = [
            found("deb.example.test"),
            found("pkgs.example"),
            found("a.internal.test"),
        ];
        let f = Filter::new(&[], &["*.internal.test".into()], 10);
        assert_eq!(f.hosts(&all).0, ["deb.example.test", "pkgs.example"]);
        let f = Filter::new(&["*.example".into(), "*.test".into()], &[], 10);
        assert_eq!(f.hosts(&all).0.len(), 3);
        let f = Filter::new(&["*.example".into()], &[], 10);
        assert_eq!(f.hosts(&all).0, ["pkgs.example"]);
        let f = Filter::new(&[], &[], 1);
        assert_eq!(
            f.hosts(&all),
            (
                vec!["deb.example.test".into()],
                vec!["pkgs.example".into(), "a.internal.test".into()]
            )
        );
    }
}
