//! Configuration: the YAML file as written (`raw`), validated into the typed
//! [`Config`] the rest of cistern uses.
//!
//! Only [`load`] and [`parse`] touch serde_yaml. Every error names the file, the
//! line and column, and the key path (`listeners[0].unix.mode`), so an operator
//! can fix a config without reading our source.

pub(crate) mod raw;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::RawConfig;

pub use crate::daemon::upstream::{Upstream, UpstreamEndpoint};
pub use crate::listen::limit::ClientLimits;
pub use crate::listen::{ListenerKind, TcpListener, TlsListener, UnixListener};
pub use crate::telemetry::{LogConfig, LogFormat};

/// The configuration cistern runs on when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.yaml");

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub log: LogConfig,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    pub upstream: Upstream,
    pub listeners: Vec<Listener>,
    /// Transparent caching of package downloads; off when the file has no
    /// `caching:` section.
    pub caching: Option<crate::mitm::CachingConfig>,
    /// This cistern's name in the `io.cistern.instance` label (default
    /// `default`).
    pub instance: String,
    /// State that survives restarts: `images.json`, `jobs.json` (default
    /// `/var/lib/cistern`).
    pub state_dir: PathBuf,
    /// Per-job sockets: which new containers get a docker socket of their own.
    pub jobs: crate::tenancy::jobs::JobsConfig,
    /// Resources of `cleanup: true` tenants that a crashed run left behind.
    pub orphans: Orphans,
    /// Limits on Docker API client connections, on every listener and job
    /// socket.
    pub clients: ClientLimits,
    /// The admin listener (health, metrics, the JSON API, the status page);
    /// `None`: `admin: none`.
    pub admin: Option<crate::admin::AdminConfig>,
}

/// What happens at start to the resources of `cleanup: true` tenants an
/// earlier run did not clean up (it crashed or was killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orphans {
    /// Kept, still owned, and removed at this run's shutdown.
    #[default]
    Adopt,
    /// Removed at start, before any client connects.
    Reap,
}

/// One socket cistern accepts Docker clients on.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
    /// What clients of this listener may ask of the daemon (default: the
    /// built-in `conservative` policy).
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// Whether containers created through this listener get cache routing and
    /// trust injected (only when `caching:` is configured). Default true.
    pub caching_inject: bool,
    /// How clients are identified: their tenant.
    pub identity: crate::tenancy::ownership::identity::Identity,
    /// Remove the resources of this listener's tenants on shutdown.
    pub cleanup: bool,
    /// Names the tenants choose are prefixed with the tenant on the daemon
    /// (and mapped back): two tenants may both have a container `db`.
    pub namespaces: bool,
}

/// A configuration error, with where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// Reads and validates a configuration file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: name.clone(),
        source,
    })?;
    parse(&name, &text)
}

/// Parses and validates configuration text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let raw = parse_raw(file, text)?;
    validate::validate(file, raw)
}

/// The embedded default configuration.
pub fn embedded_default() -> Config {
    parse("<embedded default>", EMBEDDED_DEFAULT)
        .unwrap_or_else(|err| panic!("the embedded default configuration is invalid: {err}"))
}

fn parse_raw(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    // An empty file means "all defaults", like an empty mapping.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner
            .location()
            .map(|loc| (loc.line(), loc.column()))
            .unwrap_or((0, 0));
        // serde_yaml appends "at line L column C" itself; we print it up front.
        let message = inner.to_string();
        let mut message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        // serde_yaml may start the message with its own (shorter) key path.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.contains(' ') && path.starts_with(prefix) {
                message = rest.to_string();
            }
        }
        let (line, column) = refine_location(text, line, column, &path);
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message,
        }
    })
}

/// serde_yaml reports errors raised while converting a value at the start of
/// the enclosing mapping. Point at the key itself: the first line at or after
/// that position that sets the last key of `path`.
fn refine_location(text: &str, line: usize, column: usize, path: &str) -> (usize, usize) {
    let Some(key) = path
        .rsplit('.')
        .next()
        .map(|segment| segment.split('[').next().unwrap_or(segment))
        .filter(|k| !k.is_empty())
    else {
        return (line, column);
    };
    let wanted = format!("{key}:");
    for (index, text_line) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let trimmed = text_line.trim_start();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed).trim_start();
        if trimmed.starts_with(&wanted) {
            let col = text_line.len() - trimmed.len() + 1;
            return (index + 1, col);
        }
    }
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse("f.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid_and_listens_on_the_documented_socket() {
        let cfg = embedded_default();
        assert_eq!(
            cfg.upstream.endpoint,
            UpstreamEndpoint::Unix("/var/run/docker.sock".into())
        );
        match &cfg.listeners[0].kind {
            ListenerKind::Unix(u) => assert_eq!(u.path, PathBuf::from("/run/cistern/docker.sock")),
            other => panic!("{other:?}"),
        }
        // Caching is on, with nothing configured: every domain is learned.
        let caching = cfg.caching.expect("caching on by default");
        assert!(caching.domains.is_empty());
        assert!(caching.discover.host && caching.discover.images);
    }

    #[test]
    fn errors_point_at_the_offending_key() {
        assert_eq!(
            error_of("log:\n  level: info\nshutdown_grace: soon\n"),
            "f.yaml:3:1: shutdown_grace: `soon` is not a duration like 30s or 5m: expected number at 0"
        );
        assert_eq!(
            error_of("listeners:\n  - unix:\n      path: /x\n      mode: \"999\"\n"),
            "f.yaml:4:7: listeners[0].unix.mode: `999` is not an octal file mode like \"0660\""
        );
        assert!(
            error_of("listeners:\n  - unix:\n      path: relative.sock\n")
                .contains("listeners[0].unix.path: `relative.sock` must be an absolute path")
        );
        assert!(error_of("upstream:\n  unix: /a\n  tcp: 127.0.0.1:2375\n")
            .contains("set either `unix` or `tcp`, not both"));
        assert!(error_of("listeners:\n  - name: x\n").contains("a listener needs `unix` or `tcp`"));
    }

    #[test]
    fn duplicate_listener_names_and_paths_are_refused() {
        let text = "listeners:\n  - name: a\n    unix: {path: /run/a.sock}\n  - name: a\n    unix: {path: /run/b.sock}\n";
        assert_eq!(
            error_of(text),
            "f.yaml: listeners[1].name: `a` is used twice"
        );
        let text = "listeners:\n  - unix: {path: /run/a.sock}\n  - unix: {path: /run/a.sock}\n";
        assert_eq!(
            error_of(text),
            "f.yaml: listeners[1].unix.path: `/run/a.sock` is used twice"
        );
    }

    #[test]
    fn identities_default_by_listener_kind_and_parse_every_form() {
        use crate::tenancy::ownership::identity::Identity;
        let cfg = parse(
            "f.yaml",
            "instance: ci\nstate_dir: /tmp/st\nlisteners:\n  - name: u\n    unix: {path: /run/u.sock}\n    cleanup: true\n  - name: t\n    tcp: {address: 127.0.0.1:2375}\n  - name: f\n    unix: {path: /run/f.sock}\n    identity: {fixed: alice}\n  - name: k\n    unix: {path: /run/k.sock}\n    identity:\n      tokens:\n        - {tenant: bob, bearer_sha256: 0000000000000000000000000000000000000000000000000000000000000000}\n        - {tenant: carol, user: carol, password_sha256: 0000000000000000000000000000000000000000000000000000000000000000}\n",
        )
        .unwrap();
        assert_eq!(cfg.instance, "ci");
        assert_eq!(cfg.state_dir, PathBuf::from("/tmp/st"));
        let ids: Vec<String> = cfg
            .listeners
            .iter()
            .map(|l| format!("{:?} {}", l.identity, l.cleanup))
            .collect();
        assert_eq!(
            ids,
            [
                "Peer true",
                "Fixed(tcp-t) false",
                "Fixed(alice) false",
                "Tokens(2 entries) false"
            ]
        );
        assert!(matches!(
            parse("f.yaml", "").unwrap().listeners[0].identity,
            Identity::Peer
        ));
        assert!(
            error_of("listeners:\n  - tcp: {address: 127.0.0.1:1}\n    identity: peer\n")
                .contains("listeners[0].identity: `peer` needs a unix listener")
        );
        assert!(error_of("listeners:\n  - unix: {path: /x}\n    identity: {tokens: [{tenant: a, bearer_sha256: xyz}]}\n")
            .contains("listeners[0].identity.tokens[0].bearer_sha256: must be 64 hex digits"));
        assert!(
            error_of("listeners:\n  - unix: {path: /x}\n    identity: {fixed: 'a b'}\n")
                .contains("listeners[0].identity.fixed")
        );
        assert!(
            error_of("listeners:\n  - unix: {path: /x}\n    identity: somebody\n")
                .contains("unknown identity `somebody`")
        );
        assert!(error_of("instance: 'x=y'\n").contains("instance"));
    }

    #[test]
    fn tls_listeners_read_their_files_at_load_and_default_to_certificate_identity() {
        use crate::tenancy::ownership::identity::Identity;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
        let cert = write("cert.pem", &server.cert.pem());
        let key = write("key.pem", &server.key_pair.serialize_pem());
        let other_key = write("other-key.pem", &other.key_pair.serialize_pem());
        let ca = write("ca.pem", &other.cert.pem());
        let listener = |tls: &str, identity: &str| {
            format!(
                "listeners:\n  - tcp:\n      address: 0.0.0.0:2376\n      tls: {tls}\n{identity}"
            )
        };

        // TLS lifts the loopback rule; with client_ca the certificate names
        // the tenant, without it the default stays `tcp-<name>`.
        let cfg = parse(
            "f.yaml",
            &listener(
                &format!("{{cert: {cert}, key: {key}, client_ca: {ca}}}"),
                "",
            ),
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", cfg.listeners[0].identity),
            "Certificate(CommonNameOrDns, 0 mapped, unmapped Name)"
        );
        // Without it the listener must authenticate clients some other way
        // (or be loopback, or `insecure`): TLS alone only encrypts.
        assert!(error_of(&listener(&format!("{{cert: {cert}, key: {key}}}"), ""))
            .contains("listeners[0].tcp: address: `0.0.0.0:2376` is not a loopback address and the listener does not authenticate its clients"));
        let cfg = parse(
            "f.yaml",
            &listener(&format!("{{cert: {cert}, key: {key}}}"), "    identity: {tokens: [{tenant: a, bearer_sha256: 0000000000000000000000000000000000000000000000000000000000000000}]}\n"),
        )
        .unwrap();
        assert!(matches!(cfg.listeners[0].identity, Identity::Tokens(_)));
        let cfg = parse(
            "f.yaml",
            &listener(
                &format!("{{cert: {cert}, key: {key}}}\n      insecure: true"),
                "",
            ),
        )
        .unwrap();
        assert!(matches!(cfg.listeners[0].identity, Identity::Fixed(_)));
        let cfg = parse(
            "f.yaml",
            &listener(
                &format!("{{cert: {cert}, key: {key}, client_ca: {ca}}}"),
                "    identity:\n      certificate:\n        from: san\n        map: {Runner-1.example: ci-runners}\n        unmapped: refuse\n",
            ),
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", cfg.listeners[0].identity),
            "Certificate(Dns, 1 mapped, unmapped Refuse)"
        );
        // Verified client certificates that name no one (docker-machine's)
        // authenticate a `fixed` tenant off loopback.
        let cfg = parse(
            "f.yaml",
            &listener(
                &format!("{{cert: {cert}, key: {key}, client_ca: {ca}}}"),
                "    identity: {fixed: runner}\n",
            ),
        )
        .unwrap();
        assert!(matches!(cfg.listeners[0].identity, Identity::Fixed(_)));

        assert_eq!(
            error_of(&listener(&format!("{{cert: {cert}, key: {other_key}}}"), "")),
            format!("f.yaml: listeners[0].tcp.tls.key: the key in {other_key} does not belong to the certificate in {cert}")
        );
        let missing = dir.path().join("missing.pem").display().to_string();
        assert!(
            error_of(&listener(&format!("{{cert: {missing}, key: {key}}}"), "")).starts_with(
                &format!("f.yaml: listeners[0].tcp.tls.cert: cannot read {missing}: ")
            )
        );
        assert!(error_of(&listener(
            &format!("{{cert: {cert}, key: {key}, client_ca: {key}}}"),
            ""
        ))
        .starts_with("f.yaml: listeners[0].tcp.tls.client_ca: "));
        assert!(error_of(&listener("{cert: cert.pem, key: key.pem}", ""))
            .contains("`cert.pem` must be an absolute path"));
        assert!(error_of(&listener(
            &format!("{{cert: {cert}, key: {key}}}"),
            "    identity: certificate\n"
        ))
        .contains(
            "listeners[0].identity: `certificate` needs a TCP listener with `tls.client_ca`"
        ));
        assert!(error_of(&listener(
            &format!("{{cert: {cert}, key: {key}, client_ca: {ca}}}"),
            "    identity: {certificate: {map: {a.example: 'not a tenant'}}}\n"
        ))
        .contains(
            "listeners[0].identity.certificate.map.a.example: `not a tenant` is not a valid name"
        ));
        assert!(error_of(&listener(
            &format!("{{cert: {cert}, key: {key}, client_ca: {ca}}}"),
            "    identity: {certificate: {unmapped: refuse}}\n"
        ))
        .contains("listeners[0].identity.certificate.unmapped: `refuse` with an empty `map`"));
        assert!(error_of(&listener(
            &format!("{{cert: {cert}, key: {key}, client_ca: {ca}}}"),
            "    identity: {certificate: {from: subject}}\n"
        ))
        .contains("unknown variant `subject`"));
        // Without TLS a non-loopback address still needs `insecure`.
        assert!(
            error_of("listeners:\n  - tcp: {address: 0.0.0.0:2375}\n").contains("configure `tls`")
        );
    }

    #[test]
    fn an_empty_file_means_all_defaults() {
        let cfg = parse("f.yaml", "").unwrap();
        assert_eq!(cfg.listeners.len(), 1);
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn the_largest_stored_file_defaults_to_a_quarter_of_the_cache() {
        let cache = |yaml: &str| {
            let text = format!("caching:\n  domains: [deb.example.test]\n  cache: {yaml}\n");
            let caching = parse("f.yaml", &text).unwrap().caching.unwrap();
            (caching.max_size, caching.max_object)
        };
        assert_eq!(cache("{}"), (None, None));
        assert_eq!(cache("{max_size: 20GiB}"), (Some(20 << 30), Some(5 << 30)));
        assert_eq!(
            cache("{max_size: 20GiB, max_object: 100MB}"),
            (Some(20 << 30), Some(100_000_000))
        );
        assert_eq!(cache("{max_object: 1GB}"), (None, Some(1_000_000_000)));
    }

    #[test]
    fn caching_proxy_connection_limits_default_and_refuse_zero() {
        let caching = |proxy: &str| {
            let text = format!("caching:\n  domains: [deb.example.test]\n  proxy: {proxy}\n");
            parse("f.yaml", &text).map(|c| c.caching.unwrap())
        };
        let defaults = caching("{}").unwrap();
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_connections_per_client, 256);
        let set = caching("{idle_timeout: 5s, max_connections_per_client: 8}").unwrap();
        assert_eq!(set.idle_timeout, Duration::from_secs(5));
        assert_eq!(set.max_connections_per_client, 8);
        for zero in ["{max_connections_per_client: 0}", "{idle_timeout: 0s}"] {
            let err = caching(zero).unwrap_err().to_string();
            assert!(err.starts_with("f.yaml:3:"), "{zero}: {err}");
        }
    }

    #[test]
    fn the_admin_listener_defaults_to_loopback_and_moves_out_of_caching() {
        use crate::admin::AdminConfig;
        let admin = |text: &str| parse("f.yaml", text).map(|c| c.admin);
        assert!(matches!(
            admin("").unwrap(),
            Some(AdminConfig::Tcp(a)) if a.to_string() == "127.0.0.1:9477"
        ));
        assert!(admin("admin: none\n").unwrap().is_none());
        assert!(matches!(
            admin("admin:\n  tcp: 127.0.0.1:9999\n").unwrap(),
            Some(AdminConfig::Tcp(a)) if a.port() == 9999
        ));
        match admin("admin:\n  unix: /run/c/admin.sock\n").unwrap() {
            Some(AdminConfig::Unix(u)) => {
                assert_eq!(u.path, PathBuf::from("/run/c/admin.sock"));
                assert_eq!(u.mode, 0o600);
            }
            other => panic!("{other:?}"),
        }
        match admin("admin: {unix: /run/c/admin.sock, mode: \"0660\"}\n").unwrap() {
            Some(AdminConfig::Unix(u)) => assert_eq!(u.mode, 0o660),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            admin("admin: {tcp: 0.0.0.0:9477, insecure: true}\n").unwrap(),
            Some(AdminConfig::Tcp(_))
        ));
        assert!(error_of("admin:\n  tcp: 0.0.0.0:9477\n")
            .starts_with("f.yaml: admin.tcp: `0.0.0.0:9477` is not a loopback address"));
        assert_eq!(
            error_of("admin: {tcp: 127.0.0.1:1, unix: /a.sock}\n"),
            "f.yaml: admin: set either `tcp` or `unix`, not both"
        );
        assert!(error_of("admin: {mode: \"0600\"}\n").contains("admin.mode"));
        assert!(error_of("admin: off\n").contains("`off`: write `none`"));
        assert!(error_of("admin: {unix: relative.sock}\n").contains("must be an absolute path"));
        assert!(
            error_of("caching:\n  domains: [deb.example.test]\n  admin: 127.0.0.1:9477\n")
                .contains("admin: moved to the top level")
        );
    }

    #[test]
    fn docker_client_limits_default_and_refuse_zero() {
        let defaults = parse("f.yaml", "").unwrap().clients;
        assert_eq!(defaults.idle_timeout, Duration::from_secs(120));
        assert_eq!(defaults.max_connections_per_client, 512);
        let set = parse(
            "f.yaml",
            "clients:\n  idle_timeout: 30s\n  max_connections_per_client: 16\n",
        )
        .unwrap()
        .clients;
        assert_eq!(set.idle_timeout, Duration::from_secs(30));
        assert_eq!(set.max_connections_per_client, 16);
        assert_eq!(
            error_of("clients:\n  idle_timeout: 0s\n"),
            "f.yaml:2:3: clients.idle_timeout: must be longer than 0s"
        );
        let err = error_of("clients:\n  max_connections_per_client: 0\n");
        assert!(
            err.starts_with("f.yaml:2:") && err.contains("max_connections_per_client"),
            "{err}"
        );
    }
}
