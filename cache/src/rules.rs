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
//! | revalidate | `**/*-SNAPSHOT/**` | Maven/Gradle snapshots are rebuilt under one version (checked first) |
//! | immutable | `**/pool/**/*.deb` (`.udeb`, `.ddeb`, `.dsc`, `.tar.*`, `.diff.gz`), `**/by-hash/**` | apt pool files are versioned; by-hash files are content-addressed |
//! | immutable | `**/packages/**/*.whl`, `*.tar.gz`, `*.zip`, `*.whl.metadata` | Python distribution files are versioned and never re-uploaded |
//! | immutable | `**/-/*.tgz` | npm tarballs are versioned |
//! | immutable | `**/blobs/sha256:*` | OCI blobs are content-addressed |
//! | immutable | `**/<name>-<version>-r<N>.apk` | apk packages are versioned |
//! | immutable | `**/<name>-<version>-<release>.<arch>.rpm`, `**/repodata/<hex digest>-*` | RPMs are versioned; dnf metadata files are named by their digest |
//! | immutable | `**/*.crate`, `**/api/v1/crates/*/*/download` | crate files are versioned |
//! | immutable | `**/*/@v/v*.*.*.info` (`.mod`, `.zip`) | a Go module version's files never change |
//! | immutable | `**/<artifact>/<version>/<artifact>-<version>*` | Maven/Gradle release files (`.jar`, `.pom`, `.module`, checksums) are never redeployed |
//! | immutable | `**/*.gem`, `**/quick/Marshal.4.8/*.gemspec.rz` | gems and their specs are versioned |
//! | immutable | `**/*.conda`, `**/{noarch,linux-*,osx-*,win-*}/*.tar.bz2` | conda packages are versioned |
//! | revalidate | `**/Release`, `**/InRelease`, `**/Release.gpg`, `**/Packages*`, `**/Sources*`, `**/Contents-*`, `**/Translation-*`, `**/dists/**` | apt indexes change in place (a stale `Translation` or `Contents` beside a fresh `InRelease` is a hash-sum mismatch) |
//! | revalidate | `**/simple/**` | Python simple index pages change on every upload |
//! | revalidate | `**/APKINDEX.tar.gz` | the apk index |
//! | revalidate | `**/repodata/*` | `repomd.xml` names the current metadata files |
//! | revalidate | `**/config.json`, `**/1/<a>`, `**/2/<ab>`, `**/3/<a>/<abc>`, `**/<ab>/<cd>/<abcd…>` | cargo sparse index files gain a line per publish |
//! | revalidate | `**/@v/list`, `**/@latest`, `**/@v/*` | Go version lists and queries (a branch's `.info`) |
//! | revalidate | `**/maven-metadata.xml*` | Maven version lists |
//! | revalidate | `**/info/*`, `**/versions`, `**/names`, `**/*specs.4.8.gz` | the RubyGems compact index and spec lists |
//! | revalidate | `**/repodata.json*`, `**/current_repodata.json*`, `**/channeldata.json` | conda channel indexes (and their `.zst`/`.bz2` forms) |
//! | revalidate | `/*`, `/@*/*` | npm packuments (paths without `/-/`) change on every publish; last, so files above keep their mode at the top level |
//!
//! The rules are tried in that order. Shapes in `<angle brackets>` are
//! checked by code (the parts of a file name must agree with each other or
//! with its directories), so a `current.rpm` or a `tool/latest/tool.jar`
//! is not taken for a versioned file.
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
    Layout(Layout),
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

    fn builtin(shape: Shape, mode: Mode) -> Self {
        let path = match shape {
            Shape::Glob(glob) => PathMatch::Glob(Glob::new(glob)),
            Shape::Layout(layout) => PathMatch::Layout(layout),
        };
        Rule {
            domain: None,
            path,
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
                PathMatch::Layout(l) => l.matches(path),
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
            PathMatch::Layout(l) => l.as_str(),
        };
        match &self.domain {
            Some(d) => write!(f, "{origin} {} {path} => {}", d.as_str(), self.mode),
            None => write!(f, "{origin} {path} => {}", self.mode),
        }
    }
}

/// A built-in path shape: a glob, or a repository layout a glob cannot
/// say.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Glob(&'static str),
    Layout(Layout),
}

/// Repository layouts checked by code: file names whose parts must agree
/// with each other or with their directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// An Alpine package: `<name>-<version>-r<N>.apk`.
    ApkPackage,
    /// A package file: `<name>-<version>-<release>.<arch>.rpm`.
    Rpm,
    /// A dnf/yum metadata file named by its digest, as `repomd.xml` lists
    /// them: `repodata/<hex digest>-primary.xml.gz`.
    HashNamedRepodata,
    /// A file of a cargo sparse index: `1/a`, `2/ab`, `3/a/abc`,
    /// `ab/cd/abcd…` (the crate name lower-cased, and the directories its
    /// first letters).
    CargoIndex,
    /// A Maven/Gradle release file: `<artifact>/<version>/<artifact>-<version>*`
    /// (`.jar`, `.pom`, `.module`, classifiers, checksums and signatures);
    /// never a `-SNAPSHOT` version.
    MavenRelease,
}

impl Layout {
    fn as_str(self) -> &'static str {
        match self {
            Layout::ApkPackage => "**/<name>-<version>-r<N>.apk",
            Layout::Rpm => "**/<name>-<version>-<release>.<arch>.rpm",
            Layout::HashNamedRepodata => "**/repodata/<hex digest>-*",
            Layout::CargoIndex => "**/1/<a>, **/2/<ab>, **/3/<a>/<abc>, **/<ab>/<cd>/<abcd…>",
            Layout::MavenRelease => "**/<artifact>/<version>/<artifact>-<version>*",
        }
    }

    fn matches(self, path: &str) -> bool {
        let mut segments = path.rsplit('/');
        let name = segments.next().unwrap_or_default();
        let parent = segments.next().unwrap_or_default();
        let grandparent = segments.next();
        match self {
            Layout::ApkPackage => name
                .strip_suffix(".apk")
                .and_then(|stem| stem.rsplit_once("-r"))
                .is_some_and(|(name_version, release)| {
                    name_version.contains('-') && all_digits(release)
                }),
            Layout::Rpm => name
                .strip_suffix(".rpm")
                .and_then(|stem| stem.rsplit_once('.'))
                .is_some_and(|(nvr, arch)| {
                    !arch.is_empty()
                        && arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && nvr.rsplitn(3, '-').filter(|part| !part.is_empty()).count() == 3
                }),
            Layout::HashNamedRepodata => {
                parent == "repodata"
                    && name.split_once('-').is_some_and(|(digest, _)| {
                        digest.len() >= 32 && digest.bytes().all(|b| b.is_ascii_hexdigit())
                    })
            }
            Layout::CargoIndex => {
                let crate_name = name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
                crate_name
                    && match name.len() {
                        0 => false,
                        1 => parent == "1",
                        2 => parent == "2",
                        3 => parent == &name[..1] && grandparent == Some("3"),
                        _ => parent == &name[2..4] && grandparent == Some(&name[..2]),
                    }
            }
            Layout::MavenRelease => {
                let (artifact, version) = (grandparent.unwrap_or_default(), parent);
                !artifact.is_empty()
                    && !version.is_empty()
                    && !version.ends_with("-SNAPSHOT")
                    && name
                        .strip_prefix(artifact)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .and_then(|rest| rest.strip_prefix(version))
                        .is_some_and(|rest| rest.starts_with(['.', '-']))
            }
        }
    }
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

use Layout::{ApkPackage, CargoIndex, HashNamedRepodata, MavenRelease, Rpm};
use Mode::{Immutable, Revalidate};
use Shape::{Glob as G, Layout as L};

/// The built-in rules, in order: the first that matches wins. Exceptions
/// come first (index files inside trees of immutable files), then the
/// versioned or content-addressed files, then the index files that change
/// in place.
const BUILTIN: &[(Shape, Mode)] = &[
    // Maven/Gradle snapshots are rebuilt under the same version.
    (G("**/*-SNAPSHOT/**"), Revalidate),
    // apt pool files are versioned; by-hash files are content-addressed.
    (G("**/pool/**/*.deb"), Immutable),
    (G("**/pool/**/*.udeb"), Immutable),
    (G("**/pool/**/*.ddeb"), Immutable),
    (G("**/pool/**/*.dsc"), Immutable),
    (G("**/pool/**/*.tar.*"), Immutable),
    (G("**/pool/**/*.diff.gz"), Immutable),
    (G("**/by-hash/**"), Immutable),
    // Python distribution files are never re-uploaded.
    (G("**/packages/**/*.whl"), Immutable),
    (G("**/packages/**/*.whl.metadata"), Immutable),
    (G("**/packages/**/*.tar.gz"), Immutable),
    (G("**/packages/**/*.zip"), Immutable),
    // npm tarballs.
    (G("**/-/*.tgz"), Immutable),
    // OCI blobs.
    (G("**/blobs/sha256:*"), Immutable),
    // apk packages.
    (L(ApkPackage), Immutable),
    // dnf/yum: packages, and the metadata named by its digest.
    (L(Rpm), Immutable),
    (L(HashNamedRepodata), Immutable),
    // cargo: crate files, as a static file or through the download API.
    (G("**/*.crate"), Immutable),
    (G("**/api/v1/crates/*/*/download"), Immutable),
    // Go module proxy: a version's files (`@v/<query>.info` for a branch
    // or an incomplete version is not one; it falls to `@v/*` below).
    (G("**/*/@v/v*.*.*.info"), Immutable),
    (G("**/*/@v/v*.*.*.mod"), Immutable),
    (G("**/*/@v/v*.*.*.zip"), Immutable),
    // Maven/Gradle release files and their checksums.
    (L(MavenRelease), Immutable),
    // RubyGems packages and gemspecs.
    (G("**/*.gem"), Immutable),
    (G("**/quick/Marshal.4.8/*.gemspec.rz"), Immutable),
    // conda packages (`.tar.bz2` only in a platform directory).
    (G("**/*.conda"), Immutable),
    (G("**/noarch/*.tar.bz2"), Immutable),
    (G("**/linux-*/*.tar.bz2"), Immutable),
    (G("**/osx-*/*.tar.bz2"), Immutable),
    (G("**/win-*/*.tar.bz2"), Immutable),
    // apt indexes (a stale `Translation` or `Contents` beside a fresh
    // `InRelease` is a hash-sum mismatch).
    (G("**/Release"), Revalidate),
    (G("**/InRelease"), Revalidate),
    (G("**/Release.gpg"), Revalidate),
    (G("**/Packages*"), Revalidate),
    (G("**/Sources*"), Revalidate),
    (G("**/Contents-*"), Revalidate),
    (G("**/Translation-*"), Revalidate),
    // Everything else apt reads from `dists/` is an index too (i18n,
    // dep11, cnf, pdiff Index files), all replaced in place; by-hash files
    // matched the immutable rule first.
    (G("**/dists/**"), Revalidate),
    // Python simple index pages.
    (G("**/simple/**"), Revalidate),
    // apk index.
    (G("**/APKINDEX.tar.gz"), Revalidate),
    // dnf/yum: `repomd.xml` (and its signature), and metadata files not
    // named by their digest.
    (G("**/repodata/*"), Revalidate),
    // cargo sparse index.
    (G("**/config.json"), Revalidate),
    (L(CargoIndex), Revalidate),
    // Go module proxy: version lists and queries.
    (G("**/@v/list"), Revalidate),
    (G("**/@latest"), Revalidate),
    (G("**/@v/*"), Revalidate),
    // Maven/Gradle metadata (and its checksums).
    (G("**/maven-metadata.xml*"), Revalidate),
    // RubyGems compact index and the older spec indexes.
    (G("**/info/*"), Revalidate),
    (G("**/versions"), Revalidate),
    (G("**/names"), Revalidate),
    (G("**/*specs.4.8.gz"), Revalidate),
    // conda channel indexes (`.zst`, `.bz2` and other variants).
    (G("**/repodata.json*"), Revalidate),
    (G("**/current_repodata.json*"), Revalidate),
    (G("**/channeldata.json"), Revalidate),
    // npm packuments: paths without `/-/`, last so that every file above
    // keeps its own mode at the top level.
    (G("/*"), Revalidate),
    (G("/@*/*"), Revalidate),
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
        BUILTIN
            .iter()
            .map(|&(shape, mode)| Rule::builtin(shape, mode))
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

    /// Asserts the mode of every path, naming the first that differs.
    fn modes(want: Mode, paths: &[&str]) {
        for path in paths {
            assert_eq!(mode(path), want, "{path}");
        }
    }

    #[test]
    fn apk_packages_and_index() {
        modes(
            Mode::Immutable,
            &[
                "/alpine/v3.19/main/x86_64/musl-1.2.4_git20230717-r4.apk",
                "/alpine/edge/community/aarch64/py3-requests-2.31.0-r1.apk",
                "/hello-1.0-r0.apk",
            ],
        );
        modes(
            Mode::Revalidate,
            &[
                "/alpine/v3.19/main/x86_64/APKINDEX.tar.gz",
                "/APKINDEX.tar.gz",
            ],
        );
        // Not an Alpine package name: no `-r<N>` release.
        modes(
            Mode::Default,
            &[
                "/downloads/app-release.apk",
                "/downloads/app-latest.apk",
                "/downloads/app-r.apk",
            ],
        );
    }

    #[test]
    fn dnf_packages_metadata_and_repomd() {
        modes(
            Mode::Immutable,
            &[
                "/fedora/linux/releases/39/Everything/x86_64/os/Packages/h/hello-2.12.1-2.fc39.x86_64.rpm",
                "/centos/9-stream/BaseOS/x86_64/os/Packages/bash-5.1.8-9.el9.x86_64.rpm",
                "/epel/9/Everything/source/tree/Packages/h/hello-2.12-1.el9.src.rpm",
                "/repo/noarch/tzdata-2024a-1.fc39.noarch.rpm",
                concat!(
                    "/fedora/linux/releases/39/Everything/x86_64/os/repodata/",
                    "3b5ac6b2e8a4c9d7f0e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7",
                    "-primary.xml.zck"
                ),
                "/repo/repodata/0123456789abcdef0123456789abcdef-filelists.xml.gz",
                "/repo/repodata/da39a3ee5e6b4b0d3255bfef95601890afd80709-comps-Everything.x86_64.xml",
            ],
        );
        modes(
            Mode::Revalidate,
            &[
                "/fedora/linux/releases/39/Everything/x86_64/os/repodata/repomd.xml",
                "/repo/repodata/repomd.xml.asc",
                // Metadata not named by its digest is replaced in place.
                "/repo/repodata/primary.xml.gz",
                "/repo/repodata/abc-primary.xml.gz",
            ],
        );
        // A "current" download is not a versioned package file.
        modes(
            Mode::Default,
            &[
                "/downloads/tool_current_x86_64.rpm",
                "/downloads/tool-latest.rpm",
            ],
        );
    }

    #[test]
    fn cargo_sparse_index_and_crates() {
        modes(
            Mode::Revalidate,
            &[
                "/config.json",
                "/index/config.json",
                "/1/a",
                "/2/ab",
                "/3/s/syn",
                "/se/rd/serde",
                "/to/ki/tokio-util",
                "/index/se/rd/serde_json",
            ],
        );
        modes(
            Mode::Immutable,
            &[
                "/api/v1/crates/serde/1.0.197/download",
                "/crates/serde/serde-1.0.197.crate",
                "/serde/serde-1.0.197.crate",
            ],
        );
        // Look like index paths, but the directories are not the name's
        // first letters (or the name is not a crate name).
        modes(
            Mode::Default,
            &[
                "/en/us/index",
                "/3/x/syn",
                "/se/rd/sedre",
                "/2/abc",
                "/se/rd/Serde",
            ],
        );
    }

    #[test]
    fn go_module_proxy() {
        modes(
            Mode::Immutable,
            &[
                "/modules.example.test/x/text/@v/v0.14.0.info",
                "/modules.example.test/x/text/@v/v0.14.0.mod",
                "/modules.example.test/x/text/@v/v0.14.0.zip",
                "/github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
                "/example.test/m/@v/v0.0.0-20240101000000-0123456789ab.info",
                "/example.test/m/@v/v2.0.0+incompatible.mod",
                "/goproxy/example.test/m/@v/v1.0.0.zip",
            ],
        );
        modes(
            Mode::Revalidate,
            &[
                "/modules.example.test/x/text/@v/list",
                "/modules.example.test/x/text/@latest",
                // A query, not a version: resolves to another one tomorrow.
                "/example.test/m/@v/master.info",
                "/example.test/m/@v/v1.info",
            ],
        );
        // `@v/list` is never immutable, even at the top level.
        assert_ne!(mode("/@v/list"), Mode::Immutable);
    }

    #[test]
    fn maven_and_gradle() {
        modes(
            Mode::Immutable,
            &[
                "/maven2/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.jar",
                "/maven2/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.pom",
                "/maven2/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.jar.sha1",
                "/maven2/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0.pom.asc",
                "/maven2/org/apache/commons/commons-lang3/3.14.0/commons-lang3-3.14.0-sources.jar",
                "/m2/org/jetbrains/kotlin/kotlin-stdlib/1.9.22/kotlin-stdlib-1.9.22.module",
                "/com/example/app/1.0/app-1.0.jar",
            ],
        );
        modes(
            Mode::Revalidate,
            &[
                "/maven2/org/apache/commons/commons-lang3/maven-metadata.xml",
                "/maven2/org/apache/commons/commons-lang3/maven-metadata.xml.sha1",
                "/maven2/com/example/app/1.1-SNAPSHOT/maven-metadata.xml",
                // A SNAPSHOT jar is rebuilt under the same version.
                "/maven2/com/example/app/1.1-SNAPSHOT/app-1.1-SNAPSHOT.jar",
                "/maven2/com/example/app/1.1-SNAPSHOT/app-1.1-20240101.120000-3.jar",
                "/maven2/com/example/app/1.1-SNAPSHOT/app-1.1-SNAPSHOT.pom.sha1",
            ],
        );
        // Not named after its directories: not a release file.
        modes(
            Mode::Default,
            &["/tool/latest/tool.jar", "/lib/1.0/other-1.0.jar"],
        );
    }

    #[test]
    fn rubygems() {
        modes(
            Mode::Immutable,
            &[
                "/gems/rails-7.1.3.gem",
                "/api/gems/mirror/gems/nokogiri-1.16.0-x86_64-linux.gem",
                "/quick/Marshal.4.8/rails-7.1.3.gemspec.rz",
            ],
        );
        modes(
            Mode::Revalidate,
            &[
                "/versions",
                "/names",
                "/info/rails",
                "/api/gems/mirror/versions",
                "/api/gems/mirror/info/nokogiri",
                "/specs.4.8.gz",
                "/latest_specs.4.8.gz",
                "/prerelease_specs.4.8.gz",
            ],
        );
    }

    #[test]
    fn conda() {
        modes(
            Mode::Revalidate,
            &[
                "/conda-forge/linux-64/repodata.json",
                "/conda-forge/linux-64/repodata.json.zst",
                "/conda-forge/linux-64/repodata.json.bz2",
                "/conda-forge/noarch/current_repodata.json",
                "/conda-forge/noarch/current_repodata.json.zst",
                "/conda-forge/channeldata.json",
            ],
        );
        modes(
            Mode::Immutable,
            &[
                "/conda-forge/linux-64/numpy-1.26.4-py312heda63a1_0.conda",
                "/conda-forge/noarch/requests-2.31.0-pyhd8ed1ab_0.tar.bz2",
                "/main/linux-aarch64/zlib-1.2.13-h5eee18b_0.tar.bz2",
                "/main/osx-arm64/zlib-1.2.13-h5eee18b_0.tar.bz2",
                "/main/win-64/zlib-1.2.13-h8cc25b3_0.tar.bz2",
            ],
        );
        // A bzip2 tarball outside a conda platform directory.
        assert_eq!(mode("/downloads/tool/tool.tar.bz2"), Mode::Default);
    }

    #[test]
    fn npm_packuments_do_not_take_top_level_files_of_other_ecosystems() {
        // Index files at the top level revalidate, by their own rule or
        // npm's.
        modes(
            Mode::Revalidate,
            &["/config.json", "/versions", "/names", "/APKINDEX.tar.gz"],
        );
        // Versioned files at the top level keep their own mode.
        modes(
            Mode::Immutable,
            &[
                "/hello-1.0-r0.apk",
                "/hello-2.12-1.fc39.x86_64.rpm",
                "/serde-1.0.197.crate",
                "/rails-7.1.3.gem",
                "/numpy-1.26.4-py312heda63a1_0.conda",
            ],
        );
        // And packuments stay packuments.
        modes(
            Mode::Revalidate,
            &["/left-pad", "/@scope/pkg", "/@scope%2fpkg", "/config"],
        );
    }

    #[test]
    fn every_builtin_rule_is_reachable() {
        // A rule shadowed by those before it for every path would be dead
        // weight: each built-in must be the first match for some path.
        let rules = Rules::default();
        let samples = [
            "/a/1.0-SNAPSHOT/a-1.0-SNAPSHOT.jar",
            "/pool/a_1.deb",
            "/pool/a_1.udeb",
            "/pool/a_1.ddeb",
            "/pool/a_1.dsc",
            "/pool/a_1.tar.xz",
            "/pool/a_1.diff.gz",
            "/dists/by-hash/SHA256/ab",
            "/packages/a-1-py3-none-any.whl",
            "/packages/a-1-py3-none-any.whl.metadata",
            "/packages/a-1.tar.gz",
            "/packages/a-1.zip",
            "/a/-/a-1.tgz",
            "/v2/a/blobs/sha256:ab",
            "/a-1-r0.apk",
            "/a-1-1.x86_64.rpm",
            "/repodata/0123456789abcdef0123456789abcdef-primary.xml.gz",
            "/a/a-1.crate",
            "/api/v1/crates/a/1/download",
            "/m/@v/v1.0.0.info",
            "/m/@v/v1.0.0.mod",
            "/m/@v/v1.0.0.zip",
            "/a/1.0/a-1.0.jar",
            "/gems/a-1.gem",
            "/quick/Marshal.4.8/a-1.gemspec.rz",
            "/linux-64/a-1-0.conda",
            "/noarch/a-1-0.tar.bz2",
            "/linux-64/a-1-0.tar.bz2",
            "/osx-64/a-1-0.tar.bz2",
            "/win-64/a-1-0.tar.bz2",
            "/dists/stable/Release",
            "/dists/stable/InRelease",
            "/dists/stable/Release.gpg",
            "/dists/stable/main/binary-amd64/Packages.xz",
            "/dists/stable/main/source/Sources.xz",
            "/dists/stable/main/Contents-amd64.gz",
            "/dists/stable/main/i18n/Translation-en",
            "/dists/stable/main/i18n/Index",
            "/simple/a/",
            "/alpine/APKINDEX.tar.gz",
            "/repo/repodata/repomd.xml",
            "/index/config.json",
            "/index/3/s/syn",
            "/m/@v/list",
            "/m/@latest",
            "/m/@v/master.info",
            "/a/maven-metadata.xml",
            "/api/info/a",
            "/api/versions",
            "/api/names",
            "/api/specs.4.8.gz",
            "/linux-64/repodata.json",
            "/linux-64/current_repodata.json",
            "/conda-forge/channeldata.json",
            "/a",
            "/@scope/a",
        ];
        for rule in rules.rules.iter() {
            assert!(
                samples.iter().any(|path| rules
                    .matching("repo.example.test", path)
                    .map(|r| r as *const Rule)
                    == Some(rule as *const Rule)),
                "no sample path reaches {rule}"
            );
        }
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
