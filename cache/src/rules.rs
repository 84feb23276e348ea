//! Per-domain and per-path caching rules.
//!
//! A rule picks a [`Mode`] for the requests it matches; the first matching
//! configured rule wins, then the built-in defaults, then [`Mode::Default`].
//! Rules refine, they do not replace, HTTP semantics: `no-store` and `private`
//! responses are never stored whatever the mode, and responses that set a
//! cookie only under `immutable` (see `policy.rs`).
//!
//! The built-in defaults describe package repositories by *path shape*, never
//! by host name, so they work for mirrors and private registries alike:
//!
//! | mode | paths | why |
//! | --- | --- | --- |
//! | immutable | `**/pool/**/*.deb` (`.udeb`, `.ddeb`, `.dsc`, `.tar.*`, `.diff.gz`), `**/by-hash/**` | apt pool files are versioned; by-hash files are content-addressed |
//! | immutable | `**/packages/**/*.whl`, `*.tar.gz`, `*.zip`, `*.whl.metadata` | Python distribution files are versioned and never re-uploaded |
//! | immutable | `**/-/*.tgz` | npm tarballs are versioned |
//! | immutable | `**/blobs/sha256:*` | OCI blobs are content-addressed |
//! | revalidate | `**/Release`, `**/InRelease`, `**/Release.gpg`, `**/Packages*`, `**/Sources*`, `**/Contents-*`, `**/Translation-*`, `**/dists/**` | apt indexes change in place (a stale `Translation` or `Contents` beside a fresh `InRelease` is a hash-sum mismatch) |
//! | revalidate | `**/simple/**` | Python simple index pages change on every upload |
//! | revalidate | `/*`, `/@*/*` | npm packuments (paths without `/-/`) change on every publish |
//!
//! A rule as it appears in the configuration file:
//!
//! ```yaml
//! - domain: "*.example.test"   # optional glob on the host name; omitted = any host
//!   path: "/internal/"         # a prefix, or a glob when it contains * or ?
//!   mode: bypass               # immutable | revalidate | default | bypass
//! ```

use std::fmt;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pattern::Glob;

/// How a matched request is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Versioned or content-addressed: fresh for the configured immutable
    /// lifetime even without cache headers; never revalidated before then.
    Immutable,
    /// Index files: stored, but revalidated with the origin on every use
    /// (a conditional request, so an unchanged file costs a 304).
    Revalidate,
    /// Plain HTTP caching semantics, as the origin's headers say.
    Default,
    /// Not cached at all: forwarded untouched.
    Bypass,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Immutable => "immutable",
            Mode::Revalidate => "revalidate",
            Mode::Default => "default",
            Mode::Bypass => "bypass",
        })
    }
}

/// One rule as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Host name glob (`*.example.test`); `None` matches every host.
    #[serde(default)]
    pub domain: Option<String>,
    /// A path prefix (`/internal/`), or a glob when it contains `*` or `?`.
    pub path: String,
    /// What to do with matching requests.
    pub mode: Mode,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    domain: Option<Glob>,
    path: PathMatch,
    mode: Mode,
    builtin: bool,
}

#[derive(Debug, Clone)]
enum PathMatch {
    Prefix(String),
    Glob(Glob),
}

impl Rule {
    /// Validates a configured rule.
    pub fn new(config: &RuleConfig) -> Result<Self> {
        if !(config.path.starts_with('/') || config.path.starts_with("**")) {
            return Err(Error::InvalidRule(format!(
                "path {:?} must start with `/` or `**`",
                config.path
            )));
        }
        let domain = match &config.domain {
            Some(d) if d.trim().is_empty() => {
                return Err(Error::InvalidRule("domain must not be empty".into()))
            }
            Some(d) if d.contains(['/', ':']) => {
                return Err(Error::InvalidRule(format!(
                    "domain {d:?} must be a host name glob, without scheme, port or path"
                )))
            }
            Some(d) => Some(Glob::new(&d.to_ascii_lowercase())),
            None => None,
        };
        let path = if Glob::is_glob(&config.path) {
            PathMatch::Glob(Glob::new(&config.path))
        } else {
            PathMatch::Prefix(config.path.clone())
        };
        Ok(Rule {
            domain,
            path,
            mode: config.mode,
            builtin: false,
        })
    }

    fn builtin(path: &str, mode: Mode) -> Self {
        Rule {
            domain: None,
            path: PathMatch::Glob(Glob::new(path)),
            mode,
            builtin: true,
        }
    }

    /// Whether the rule applies to this host name (no port) and path.
    pub fn matches(&self, hostname: &str, path: &str) -> bool {
        let domain_ok = self
            .domain
            .as_ref()
            .map_or(true, |d| d.matches(&hostname.to_ascii_lowercase()));
        domain_ok
            && match &self.path {
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                PathMatch::Glob(g) => g.matches(path),
            }
    }

    /// The rule's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = if self.builtin {
            "builtin"
        } else {
            "configured"
        };
        let path = match &self.path {
            PathMatch::Prefix(p) => p.as_str(),
            PathMatch::Glob(g) => g.as_str(),
        };
        match &self.domain {
            Some(d) => write!(f, "{origin} {} {path} => {}", d.as_str(), self.mode),
            None => write!(f, "{origin} {path} => {}", self.mode),
        }
    }
}

/// Paths of versioned or content-addressed files.
const BUILTIN_IMMUTABLE: &[&str] = &[
    "**/pool/**/*.deb",
    "**/pool/**/*.udeb",
    "**/pool/**/*.ddeb",
    "**/pool/**/*.dsc",
    "**/pool/**/*.tar.*",
    "**/pool/**/*.diff.gz",
    "**/by-hash/**",
    "**/packages/**/*.whl",
    "**/packages/**/*.whl.metadata",
    "**/packages/**/*.tar.gz",
    "**/packages/**/*.zip",
    "**/-/*.tgz",
    "**/blobs/sha256:*",
];

/// Paths of index files that change in place.
const BUILTIN_REVALIDATE: &[&str] = &[
    "**/Release",
    "**/InRelease",
    "**/Release.gpg",
    "**/Packages*",
    "**/Sources*",
    "**/Contents-*",
    "**/Translation-*",
    // Everything else apt reads from `dists/` is an index too (i18n,
    // dep11, cnf, pdiff Index files), all replaced in place; by-hash files
    // matched the immutable rule first.
    "**/dists/**",
    "**/simple/**",
    "/*",
    "/@*/*",
];

/// The ordered rule set: configured rules first, then the built-ins.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Configured rules followed by the built-in package-repository defaults.
    pub fn new(configured: &[RuleConfig]) -> Result<Self> {
        let mut rules = configured
            .iter()
            .map(Rule::new)
            .collect::<Result<Vec<_>>>()?;
        rules.extend(Self::builtin_rules());
        Ok(Rules { rules })
    }

    /// Only the configured rules, without built-in defaults.
    pub fn without_defaults(configured: &[RuleConfig]) -> Result<Self> {
        let rules = configured
            .iter()
            .map(Rule::new)
            .collect::<Result<Vec<_>>>()?;
        Ok(Rules { rules })
    }

    fn builtin_rules() -> impl Iterator<Item = Rule> {
        BUILTIN_IMMUTABLE
            .iter()
            .map(|p| Rule::builtin(p, Mode::Immutable))
            .chain(
                BUILTIN_REVALIDATE
                    .iter()
                    .map(|p| Rule::builtin(p, Mode::Revalidate)),
            )
    }

    /// The first rule matching this host name and path, if any.
    pub fn matching(&self, hostname: &str, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(hostname, path))
    }

    /// The mode for this host name and path ([`Mode::Default`] if no rule
    /// matches).
    pub fn mode_for(&self, hostname: &str, path: &str) -> Mode {
        self.matching(hostname, path)
            .map_or(Mode::Default, Rule::mode)
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            rules: Self::builtin_rules().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &str) -> Mode {
        Rules::default().mode_for("repo.example.test", path)
    }

    #[test]
    fn apt_pool_files_are_immutable() {
        assert_eq!(
            mode("/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"),
            Mode::Immutable
        );
        assert_eq!(
            mode("/debian/dists/stable/main/binary-amd64/by-hash/SHA256/ab12"),
            Mode::Immutable
        );
    }

    #[test]
    fn a_file_directly_under_pool_is_immutable() {
        assert_eq!(mode("/debian/pool/x.deb"), Mode::Immutable);
        assert_eq!(mode("/pool/x_1.0_amd64.deb"), Mode::Immutable);
    }

    #[test]
    fn apt_indexes_revalidate() {
        assert_eq!(mode("/debian/dists/stable/Release"), Mode::Revalidate);
        assert_eq!(mode("/debian/dists/stable/InRelease"), Mode::Revalidate);
        assert_eq!(
            mode("/debian/dists/stable/main/binary-amd64/Packages.xz"),
            Mode::Revalidate
        );
        for index in [
            "/debian/dists/stable/main/i18n/Translation-en.bz2",
            "/debian/dists/stable/main/i18n/Index",
            "/debian/dists/stable/main/Contents-amd64.gz",
            "/debian/dists/stable/main/dep11/Components-amd64.yml.gz",
            "/debian/dists/stable/main/cnf/Commands-amd64.xz",
            "/debian/dists/stable/main/binary-amd64/Packages.diff/Index",
            "/flat/Translation-en",
        ] {
            assert_eq!(mode(index), Mode::Revalidate, "{index}");
        }
        // Content-addressed, though under dists/.
        assert_eq!(
            mode("/debian/dists/stable/main/binary-amd64/by-hash/SHA256/ab12"),
            Mode::Immutable
        );
    }

    #[test]
    fn python_files_and_indexes() {
        assert_eq!(
            mode("/packages/ab/cd/ef/pkg-1.0-py3-none-any.whl"),
            Mode::Immutable
        );
        assert_eq!(mode("/packages/ab/cd/pkg-1.0.tar.gz"), Mode::Immutable);
        assert_eq!(mode("/simple/pkg/"), Mode::Revalidate);
    }

    #[test]
    fn npm_tarballs_and_packuments() {
        assert_eq!(mode("/left-pad/-/left-pad-1.3.0.tgz"), Mode::Immutable);
        assert_eq!(mode("/@scope/pkg/-/pkg-1.0.0.tgz"), Mode::Immutable);
        assert_eq!(mode("/left-pad"), Mode::Revalidate);
        assert_eq!(mode("/@scope/pkg"), Mode::Revalidate);
    }

    #[test]
    fn oci_blobs_are_immutable() {
        assert_eq!(mode("/v2/lib/app/blobs/sha256:0123abcd"), Mode::Immutable);
    }

    #[test]
    fn unknown_paths_use_default_http_semantics() {
        assert_eq!(mode("/some/other/file.txt"), Mode::Default);
    }

    #[test]
    fn configured_rules_win_over_builtins() {
        let rules = Rules::new(&[RuleConfig {
            domain: Some("*.example.test".into()),
            path: "/debian/pool/".into(),
            mode: Mode::Bypass,
        }])
        .unwrap();
        assert_eq!(
            rules.mode_for("deb.example.test", "/debian/pool/x/y.deb"),
            Mode::Bypass
        );
        assert_eq!(
            rules.mode_for("other.example", "/debian/pool/x/y.deb"),
            Mode::Immutable
        );
    }

    #[test]
    fn rule_config_rejects_unknown_fields() {
        let err = serde_json::from_str::<RuleConfig>(
            r#"{"domain": "a.example.test", "path": "/", "mode": "bypass", "ttl": 3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn rule_config_parses_every_mode() {
        for (text, mode) in [
            ("immutable", Mode::Immutable),
            ("revalidate", Mode::Revalidate),
            ("default", Mode::Default),
            ("bypass", Mode::Bypass),
        ] {
            let raw = format!(r#"{{"path": "/x", "mode": "{text}"}}"#);
            let rule: RuleConfig = serde_json::from_str(&raw).unwrap();
            assert_eq!(rule.mode, mode);
            assert_eq!(mode.to_string(), text);
        }
    }

    #[test]
    fn invalid_rules_are_rejected() {
        let bad = |domain: Option<&str>, path: &str| {
            Rule::new(&RuleConfig {
                domain: domain.map(str::to_owned),
                path: path.into(),
                mode: Mode::Default,
            })
            .is_err()
        };
        assert!(bad(None, "pool/"));
        assert!(bad(Some("https://a.example.test"), "/"));
        assert!(bad(Some(""), "/"));
    }
}
