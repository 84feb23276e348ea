//! Turns a [`RawConfig`] into a [`Config`]: fills defaults, resolves user and
//! group names, and checks what only makes sense across the whole file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    RawAdmin, RawAdminFields, RawCertFrom, RawCertificate, RawConfig, RawIdentity, RawLogFormat,
    RawUnmapped, UserOrId,
};
use super::{
    Config, ConfigError, Listener, ListenerKind, LogConfig, LogFormat, TcpListener, TlsListener,
    UnixListener, Upstream, UpstreamEndpoint,
};
use crate::admin::AdminConfig;
use crate::listen::TlsFiles;
use crate::policy::Policy;
use crate::tenancy::ownership::identity::{
    self, CertName, CertificateIdentity, Credential, Identity, Tenant, Token, Unmapped,
};

const DEFAULT_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DAEMON_SOCKET: &str = "/var/run/docker.sock";
const DEFAULT_LISTEN_SOCKET: &str = "/run/cistern/docker.sock";
const DEFAULT_INSTANCE: &str = "default";
const DEFAULT_STATE_DIR: &str = "/var/lib/cistern";

pub(super) fn validate(file: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let invalid = |path: String, message: String| ConfigError::Invalid {
        file: file.to_string(),
        path,
        message,
    };

    let log = LogConfig {
        format: match raw.log.format {
            Some(RawLogFormat::Json) => LogFormat::Json,
            Some(RawLogFormat::Human) | None => LogFormat::Human,
        },
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };

    let endpoint = match (raw.upstream.unix, raw.upstream.tcp) {
        (_, Some(addr)) => UpstreamEndpoint::Tcp(addr),
        (Some(path), None) => UpstreamEndpoint::Unix(path),
        (None, None) => UpstreamEndpoint::Unix(PathBuf::from(DEFAULT_DAEMON_SOCKET)),
    };
    let upstream = Upstream {
        endpoint,
        connect_timeout: raw
            .upstream
            .connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
    };

    let raw_listeners = raw.listeners.unwrap_or_default();
    let mut listeners = Vec::with_capacity(raw_listeners.len().max(1));
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (index, raw) in raw_listeners.into_iter().enumerate() {
        let at = |key: &str| format!("listeners[{index}].{key}");
        let name = raw.name.unwrap_or_else(|| format!("listener{index}"));
        if !names.insert(name.clone()) {
            return Err(invalid(at("name"), format!("`{name}` is used twice")));
        }
        let kind = if let Some(unix) = raw.unix {
            if let Some(dir_upstream) = match &upstream.endpoint {
                UpstreamEndpoint::Unix(p) if *p == unix.path.0 => Some(p),
                _ => None,
            } {
                return Err(invalid(
                    at("unix.path"),
                    format!(
                        "`{}` is the daemon's own socket (upstream.unix)",
                        dir_upstream.display()
                    ),
                ));
            }
            if !paths.insert(unix.path.0.clone()) {
                return Err(invalid(
                    at("unix.path"),
                    format!("`{}` is used twice", unix.path.0.display()),
                ));
            }
            ListenerKind::Unix(UnixListener {
                path: unix.path.0,
                mode: unix.mode.map_or(0o660, |m| m.0),
                owner: resolve(unix.owner, Kind::User).map_err(|m| invalid(at("unix.owner"), m))?,
                group: resolve(unix.group, Kind::Group)
                    .map_err(|m| invalid(at("unix.group"), m))?,
            })
        } else if let Some(tcp) = raw.tcp {
            let tls = match tcp.tls {
                Some(tls) => {
                    let files = TlsFiles {
                        cert: tls.cert.0,
                        key: tls.key.0,
                        client_ca: tls.client_ca.map(|p| p.0),
                    };
                    let server_config = crate::listen::tls::server_config(&files)
                        .map_err(|e| invalid(at(&format!("tcp.tls.{}", e.field)), e.message))?;
                    Some(TlsListener {
                        files,
                        server_config,
                    })
                }
                None => None,
            };
            ListenerKind::Tcp(TcpListener {
                address: tcp.address,
                insecure: tcp.insecure,
                tls,
            })
        } else {
            unreachable!("RawListener::try_from guarantees unix or tcp");
        };
        let policy = match raw.policy {
            Some(policy) => policy
                .validate()
                .map_err(|err| invalid(at("policy"), err.to_string()))?,
            None => Policy::default(),
        };
        let identity = listener_identity(raw.identity, &name, &kind)
            .map_err(|(key, message)| invalid(at(&key), message))?;
        if let ListenerKind::Tcp(tcp) = &kind {
            open_to_anyone(tcp, &identity).map_err(|message| invalid(at("tcp"), message))?;
        }
        listeners.push(Listener {
            name,
            kind,
            policy: Arc::new(policy),
            caching_inject: raw.caching_inject.unwrap_or(true),
            identity,
            cleanup: raw.cleanup.unwrap_or(false),
            namespaces: raw.namespaces.unwrap_or(false),
        });
    }
    if listeners.is_empty() {
        listeners.push(Listener {
            name: "default".into(),
            kind: ListenerKind::Unix(UnixListener {
                path: PathBuf::from(DEFAULT_LISTEN_SOCKET),
                mode: 0o660,
                owner: None,
                group: None,
            }),
            policy: Arc::new(Policy::default()),
            caching_inject: true,
            identity: Identity::Peer,
            cleanup: false,
            namespaces: false,
        });
    }

    let caching = match raw.caching {
        Some(caching) => Some(
            caching
                .validate()
                .map_err(|message| invalid("caching".into(), message))?,
        ),
        None => None,
    };

    let instance = raw.instance.unwrap_or_else(|| DEFAULT_INSTANCE.into());
    identity::check_name(&instance).map_err(|m| invalid("instance".into(), m))?;

    let state_dir = raw
        .state_dir
        .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), |p| p.0);
    let listener_names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let jobs = match raw.jobs {
        Some(jobs) => jobs
            .validate(&state_dir, &listener_names)
            .map_err(|message| invalid("jobs".into(), message))?,
        None => crate::tenancy::jobs::JobsConfig {
            socket_dir: state_dir.join("jobs"),
            rules: Vec::new(),
        },
    };

    let admin = admin(raw.admin).map_err(|(key, message)| invalid(key, message))?;

    Ok(Config {
        admin,
        instance,
        state_dir,
        jobs,
        orphans: raw.orphans.unwrap_or_default(),
        clients: {
            let defaults = super::ClientLimits::default();
            super::ClientLimits {
                idle_timeout: raw
                    .clients
                    .idle_timeout
                    .map_or(defaults.idle_timeout, |t| t.0),
                max_connections_per_client: raw
                    .clients
                    .max_connections_per_client
                    .map_or(defaults.max_connections_per_client, |n| n.get()),
            }
        },
        caching,
        log,
        shutdown_grace: raw.shutdown_grace.map_or(DEFAULT_GRACE, |d| d.0),
        upstream,
        listeners,
    })
}

/// The admin listener: the default loopback address, `none`, a TCP address
/// (off loopback only with `insecure: true`: it shows tenants and their
/// resources) or a unix socket (mode 0600 unless set).
fn admin(raw: RawAdmin) -> Result<Option<AdminConfig>, (String, String)> {
    let key = |k: &str| format!("admin.{k}");
    let fields = match raw {
        RawAdmin::Off => return Ok(None),
        RawAdmin::Default => RawAdminFields::default(),
        RawAdmin::On(fields) => fields,
    };
    match (fields.tcp, fields.unix) {
        (Some(_), Some(_)) => Err((
            "admin".into(),
            "set either `tcp` or `unix`, not both".into(),
        )),
        (tcp, None) => {
            if fields.mode.is_some() {
                return Err((key("mode"), "applies to a `unix` socket only".into()));
            }
            let address = tcp.unwrap_or(crate::admin::config::DEFAULT_ADDRESS);
            if !address.ip().is_loopback() && fields.insecure != Some(true) {
                return Err((
                    key("tcp"),
                    format!(
                        "`{address}` is not a loopback address: the admin listener shows \
                         tenants and their resources to anyone who reaches it; use a unix \
                         socket, or set `insecure: true`"
                    ),
                ));
            }
            Ok(Some(AdminConfig::Tcp(address)))
        }
        (None, Some(path)) => {
            if fields.insecure.is_some() {
                return Err((key("insecure"), "applies to `tcp` only".into()));
            }
            Ok(Some(AdminConfig::Unix(UnixListener {
                path: path.0,
                mode: fields
                    .mode
                    .map_or(crate::admin::config::DEFAULT_MODE, |m| m.0),
                owner: None,
                group: None,
            })))
        }
    }
}

/// A listener's identity: as configured, or `peer` for unix, `certificate`
/// for TLS with `client_ca` and `fixed: tcp-<name>` for other TCP. Errors
/// name the key under the listener.
fn listener_identity(
    raw: Option<RawIdentity>,
    name: &str,
    kind: &ListenerKind,
) -> Result<Identity, (String, String)> {
    let key = |k: &str| k.to_string();
    let verifies_clients = matches!(
        kind,
        ListenerKind::Tcp(TcpListener { tls: Some(tls), .. }) if tls.files.client_ca.is_some()
    );
    match raw {
        None if verifies_clients => Ok(Identity::Certificate(CertificateIdentity::default())),
        None => match kind {
            ListenerKind::Unix(_) => Ok(Identity::Peer),
            ListenerKind::Tcp(_) => Tenant::new(format!("tcp-{name}"))
                .map(Identity::Fixed)
                .map_err(|m| {
                    (
                        key("identity"),
                        format!("the default tenant: {m}; set `identity`"),
                    )
                }),
        },
        Some(RawIdentity::Peer) => match kind {
            ListenerKind::Unix(_) => Ok(Identity::Peer),
            ListenerKind::Tcp(_) => Err((
                key("identity"),
                "`peer` needs a unix listener (TCP has no peer credentials)".into(),
            )),
        },
        Some(RawIdentity::Certificate(_)) if !verifies_clients => Err((
            key("identity"),
            "`certificate` needs a TCP listener with `tls.client_ca`: only a client \
             certificate cistern verified can name a tenant"
                .into(),
        )),
        Some(RawIdentity::Certificate(raw)) => certificate_identity(raw)
            .map(Identity::Certificate)
            .map_err(|(k, m)| (format!("identity.certificate.{k}"), m)),
        Some(RawIdentity::Fixed(t)) => Tenant::new(t)
            .map(Identity::Fixed)
            .map_err(|m| (key("identity.fixed"), m)),
        Some(RawIdentity::Tokens(tokens)) => {
            if tokens.is_empty() {
                return Err((key("identity.tokens"), "needs at least one entry".into()));
            }
            let mut out = Vec::with_capacity(tokens.len());
            for (i, t) in tokens.into_iter().enumerate() {
                let at = |k: &str| format!("identity.tokens[{i}].{k}");
                let tenant = Tenant::new(t.tenant).map_err(|m| (at("tenant"), m))?;
                let credential = match (t.bearer_sha256, t.user, t.password_sha256) {
                    (Some(b), None, None) => Credential::Bearer {
                        sha256: identity::parse_sha256(&b).map_err(|m| (at("bearer_sha256"), m))?,
                    },
                    (None, Some(user), Some(p)) if !user.is_empty() && !user.contains(':') => {
                        Credential::Basic {
                            user,
                            sha256: identity::parse_sha256(&p)
                                .map_err(|m| (at("password_sha256"), m))?,
                        }
                    }
                    _ => return Err((
                        format!("identity.tokens[{i}]"),
                        "set either `bearer_sha256`, or `user` (without `:`) and `password_sha256`"
                            .into(),
                    )),
                };
                out.push(Token { tenant, credential });
            }
            Ok(Identity::Tokens(out))
        }
    }
}

/// A TCP listener off loopback must know who its clients are: TLS alone
/// only encrypts, so without client certificates or credentials anyone who
/// reaches the port would use Docker, which takes `insecure: true`. Verified
/// client certificates authenticate whatever the identity (a `fixed` tenant
/// for certificates that name no one, as docker-machine's).
fn open_to_anyone(tcp: &TcpListener, identity: &Identity) -> Result<(), String> {
    let verifies_clients = matches!(&tcp.tls, Some(tls) if tls.files.client_ca.is_some());
    let authenticated =
        verifies_clients || matches!(identity, Identity::Certificate(_) | Identity::Tokens(_));
    if tcp.address.ip().is_loopback() || tcp.insecure || authenticated {
        return Ok(());
    }
    Err(format!(
        "address: `{}` is not a loopback address and the listener does not authenticate \
         its clients: anyone who reaches it controls Docker through cistern. Set \
         `tls.client_ca` or `identity: {{tokens: ...}}`, or `insecure: true` if the \
         network is trusted",
        tcp.address
    ))
}

fn certificate_identity(raw: RawCertificate) -> Result<CertificateIdentity, (String, String)> {
    let mut map = std::collections::BTreeMap::new();
    for (name, tenant) in raw.map.unwrap_or_default() {
        let at = format!("map.{name}");
        if name.is_empty() {
            return Err((at, "a certificate name cannot be empty".into()));
        }
        let tenant = Tenant::new(tenant).map_err(|m| (at.clone(), m))?;
        // Names are compared without regard to ASCII case.
        if map.insert(name.to_ascii_lowercase(), tenant).is_some() {
            return Err((at, "listed twice (names are compared ignoring case)".into()));
        }
    }
    if map.is_empty() && matches!(raw.unmapped, Some(RawUnmapped::Refuse)) {
        return Err((
            "unmapped".into(),
            "`refuse` with an empty `map` refuses every client".into(),
        ));
    }
    Ok(CertificateIdentity {
        from: match raw.from {
            None | Some(RawCertFrom::CnOrSan) => CertName::CommonNameOrDns,
            Some(RawCertFrom::Cn) => CertName::CommonName,
            Some(RawCertFrom::San) => CertName::Dns,
        },
        map,
        unmapped: match raw.unmapped {
            None | Some(RawUnmapped::Name) => Unmapped::Name,
            Some(RawUnmapped::Refuse) => Unmapped::Refuse,
        },
    })
}

enum Kind {
    User,
    Group,
}

fn resolve(value: Option<UserOrId>, kind: Kind) -> Result<Option<u32>, String> {
    let name = match value {
        None => return Ok(None),
        Some(UserOrId::Id(id)) => return Ok(Some(id)),
        Some(UserOrId::Name(name)) => name,
    };
    let found = match kind {
        Kind::User => nix::unistd::User::from_name(&name).map(|u| u.map(|u| u.uid.as_raw())),
        Kind::Group => nix::unistd::Group::from_name(&name).map(|g| g.map(|g| g.gid.as_raw())),
    };
    match found {
        Ok(Some(id)) => Ok(Some(id)),
        Ok(None) => Err(format!("no such {} `{name}` on this host", kind.noun())),
        Err(err) => Err(format!("cannot look up {} `{name}`: {err}", kind.noun())),
    }
}

impl Kind {
    fn noun(&self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }
}
