//! Turns a [`RawConfig`] into a [`Config`]: fills defaults, resolves user and
//! group names, and checks what only makes sense across the whole file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawConfig, RawLogFormat, UserOrId};
use super::{
    Config, ConfigError, Listener, ListenerKind, LogConfig, LogFormat, TcpListener, UnixListener,
    Upstream, UpstreamEndpoint,
};
use crate::docker::policy::Policy;

const DEFAULT_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DAEMON_SOCKET: &str = "/var/run/docker.sock";
const DEFAULT_LISTEN_SOCKET: &str = "/run/cistern/docker.sock";

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
            ListenerKind::Tcp(TcpListener {
                address: tcp.address,
                insecure: tcp.insecure,
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
        listeners.push(Listener {
            name,
            kind,
            policy: Arc::new(policy),
            caching_inject: raw.caching_inject.unwrap_or(true),
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

    Ok(Config {
        caching,
        log,
        shutdown_grace: raw.shutdown_grace.map_or(DEFAULT_GRACE, |d| d.0),
        upstream,
        listeners,
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
