//! The configuration file exactly as serde reads it.
//!
//! Field values that can be checked on their own (durations, modes, addresses)
//! are parsed by their own `Deserialize` impls so that a bad value is reported
//! with its line and column; checks that join several fields are done in
//! `try_from` conversions for the same reason.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::PolicyConfig;
use crate::units::{HumanDuration, Timeout};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub shutdown_grace: Option<HumanDuration>,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub listeners: Option<Vec<RawListener>>,
    #[serde(default)]
    pub caching: Option<crate::mitm::RawCaching>,
    /// Name of this cistern instance, in the `io.cistern.instance` label.
    #[serde(default)]
    pub instance: Option<String>,
    /// Where cistern keeps state that must survive restarts (image ownership).
    #[serde(default)]
    pub state_dir: Option<AbsolutePath>,
    /// Containers that get a docker socket of their own.
    #[serde(default)]
    pub jobs: Option<crate::tenancy::jobs::RawJobs>,
    /// What to do at start with the resources of `cleanup: true` tenants a
    /// crashed run left.
    #[serde(default)]
    pub orphans: Option<super::Orphans>,
    /// Limits on Docker API client connections.
    #[serde(default)]
    pub clients: RawClients,
    /// The admin listener: `none`, or where it listens.
    #[serde(default)]
    pub admin: RawAdmin,
}

/// `admin:` as written: absent (the default address), `none`, or a mapping.
#[derive(Debug, Default)]
pub enum RawAdmin {
    #[default]
    Default,
    Off,
    On(RawAdminFields),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdminFields {
    #[serde(default)]
    pub tcp: Option<SocketAddr>,
    /// Allows a TCP address off loopback.
    #[serde(default)]
    pub insecure: Option<bool>,
    #[serde(default)]
    pub unix: Option<AbsolutePath>,
    #[serde(default)]
    pub mode: Option<FileMode>,
}

impl<'de> Deserialize<'de> for RawAdmin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAdmin;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`none`, or a mapping with `tcp` or `unix`")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<RawAdmin, E> {
                Ok(RawAdmin::Default)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAdmin, E> {
                match v {
                    "none" => Ok(RawAdmin::Off),
                    _ => Err(E::custom(format!(
                        "`{v}`: write `none`, or a mapping with `tcp` or `unix`"
                    ))),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawAdmin, A::Error> {
                RawAdminFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawAdmin::On)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClients {
    #[serde(default)]
    pub idle_timeout: Option<Timeout>,
    #[serde(default)]
    pub max_connections_per_client: Option<std::num::NonZeroUsize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub format: Option<RawLogFormat>,
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    Human,
    Json,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, try_from = "RawUpstreamFields")]
pub struct RawUpstream {
    pub unix: Option<PathBuf>,
    pub tcp: Option<String>,
    pub connect_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamFields {
    #[serde(default)]
    unix: Option<PathBuf>,
    #[serde(default)]
    tcp: Option<String>,
    #[serde(default)]
    connect_timeout: Option<HumanDuration>,
}

impl TryFrom<RawUpstreamFields> for RawUpstream {
    type Error = String;

    fn try_from(raw: RawUpstreamFields) -> Result<Self, String> {
        if raw.unix.is_some() && raw.tcp.is_some() {
            return Err("set either `unix` or `tcp`, not both".into());
        }
        if let Some(path) = &raw.unix {
            if !path.is_absolute() {
                return Err(format!(
                    "unix: `{}` must be an absolute path",
                    path.display()
                ));
            }
        }
        if let Some(addr) = &raw.tcp {
            if addr.contains("://") || !addr.contains(':') {
                return Err(format!("tcp: `{addr}` must be HOST:PORT"));
            }
        }
        Ok(RawUpstream {
            unix: raw.unix,
            tcp: raw.tcp,
            connect_timeout: raw.connect_timeout,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawListenerFields")]
pub struct RawListener {
    pub name: Option<String>,
    pub unix: Option<RawUnix>,
    pub tcp: Option<RawTcp>,
    pub policy: Option<PolicyConfig>,
    pub caching_inject: Option<bool>,
    pub identity: Option<RawIdentity>,
    pub cleanup: Option<bool>,
    pub namespaces: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    unix: Option<RawUnix>,
    #[serde(default)]
    tcp: Option<RawTcp>,
    #[serde(default)]
    policy: Option<PolicyConfig>,
    /// `false`: containers created through this listener get no cache
    /// routing or trust (when `caching:` is configured). Default true.
    #[serde(default)]
    caching_inject: Option<bool>,
    /// How clients are identified (tenant): `peer`, `fixed: NAME`, `tokens:`
    /// or `certificate`.
    #[serde(default)]
    identity: Option<RawIdentity>,
    /// Remove the resources of this listener's tenants on shutdown.
    #[serde(default)]
    cleanup: Option<bool>,
    /// Prefix the names this listener's tenants choose with the tenant.
    #[serde(default)]
    namespaces: Option<bool>,
}

impl TryFrom<RawListenerFields> for RawListener {
    type Error = String;

    fn try_from(raw: RawListenerFields) -> Result<Self, String> {
        match (&raw.unix, &raw.tcp) {
            (Some(_), Some(_)) => Err("a listener is either `unix` or `tcp`, not both".into()),
            (None, None) => Err("a listener needs `unix` or `tcp`".into()),
            _ => {
                // Check the policy here, where an error still has a line number.
                if let Some(policy) = &raw.policy {
                    policy.validate().map_err(|err| format!("policy: {err}"))?;
                }
                Ok(RawListener {
                    name: raw.name,
                    unix: raw.unix,
                    tcp: raw.tcp,
                    policy: raw.policy,
                    caching_inject: raw.caching_inject,
                    identity: raw.identity,
                    cleanup: raw.cleanup,
                    namespaces: raw.namespaces,
                })
            }
        }
    }
}

/// A listener's `identity:` as written: `peer`, `{fixed: NAME}`,
/// `{tokens: [...]}`, `certificate` or `{certificate: {...}}`.
#[derive(Debug)]
pub enum RawIdentity {
    Peer,
    Fixed(String),
    Tokens(Vec<RawToken>),
    Certificate(RawCertificate),
}

/// `identity: {certificate: {from, map, unmapped}}`; every key optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    #[serde(default)]
    pub from: Option<RawCertFrom>,
    /// Certificate name → tenant.
    #[serde(default)]
    pub map: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub unmapped: Option<RawUnmapped>,
}

/// Which names of the client certificate are looked at.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum RawCertFrom {
    CnOrSan,
    Cn,
    San,
}

/// What a name the map does not list becomes.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum RawUnmapped {
    Name,
    Refuse,
}

/// One `tokens:` entry: `{tenant, bearer_sha256}` or
/// `{tenant, user, password_sha256}` (SHA-256 as 64 hex digits).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub tenant: String,
    #[serde(default)]
    pub bearer_sha256: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityMap {
    #[serde(default)]
    fixed: Option<String>,
    #[serde(default)]
    tokens: Option<Vec<RawToken>>,
    #[serde(default)]
    certificate: Option<RawCertificate>,
}

impl<'de> Deserialize<'de> for RawIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawIdentity;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "`peer`, `certificate`, `fixed: NAME`, `tokens: [...]` or `certificate: {...}`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawIdentity, E> {
                match v {
                    "peer" => Ok(RawIdentity::Peer),
                    "certificate" => Ok(RawIdentity::Certificate(RawCertificate::default())),
                    other => Err(E::custom(format!(
                        "unknown identity `{other}`: use `peer`, `certificate`, `fixed: NAME`, \
                         `tokens: [...]` or `certificate: {{...}}`"
                    ))),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawIdentity, A::Error> {
                let m =
                    RawIdentityMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                match (m.fixed, m.tokens, m.certificate) {
                    (Some(f), None, None) => Ok(RawIdentity::Fixed(f)),
                    (None, Some(t), None) => Ok(RawIdentity::Tokens(t)),
                    (None, None, Some(c)) => Ok(RawIdentity::Certificate(c)),
                    _ => Err(serde::de::Error::custom(
                        "set exactly one of `fixed`, `tokens` or `certificate`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnix {
    pub path: AbsolutePath,
    #[serde(default)]
    pub mode: Option<FileMode>,
    #[serde(default)]
    pub owner: Option<UserOrId>,
    #[serde(default)]
    pub group: Option<UserOrId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTcpFields")]
pub struct RawTcp {
    pub address: SocketAddr,
    pub insecure: bool,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcpFields {
    address: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    tls: Option<RawTls>,
}

/// `tls:` of a TCP listener: PEM files. The files are read when the
/// configuration is validated.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: AbsolutePath,
    pub key: AbsolutePath,
    #[serde(default)]
    pub client_ca: Option<AbsolutePath>,
}

impl TryFrom<RawTcpFields> for RawTcp {
    type Error = String;

    fn try_from(raw: RawTcpFields) -> Result<Self, String> {
        let address: SocketAddr = raw
            .address
            .parse()
            .map_err(|_| format!("address: `{}` is not IP:PORT", raw.address))?;
        if !address.ip().is_loopback() && !raw.insecure && raw.tls.is_none() {
            return Err(format!(
                "address: `{address}` is not a loopback address; anyone who reaches it \
                 controls Docker through cistern. Bind 127.0.0.1, configure `tls` (with \
                 `client_ca` or credentials), or set `insecure: true` if the network is trusted"
            ));
        }
        Ok(RawTcp {
            address,
            insecure: raw.insecure,
            tls: raw.tls,
        })
    }
}

/// Unix permission bits written in octal, as a string (`"0660"`).
#[derive(Debug, Clone, Copy)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 => Ok(FileMode(mode)),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not an octal file mode like \"0660\""
            ))),
        }
    }
}

/// A user or group, by name or numeric id.
#[derive(Debug, Clone)]
pub enum UserOrId {
    Id(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for UserOrId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Id(u32),
            Name(String),
        }
        Ok(match Either::deserialize(d)? {
            Either::Id(id) => UserOrId::Id(id),
            Either::Name(name) => match name.parse() {
                Ok(id) => UserOrId::Id(id),
                Err(_) => UserOrId::Name(name),
            },
        })
    }
}

/// A path that must be absolute.
#[derive(Debug, Clone)]
pub struct AbsolutePath(pub PathBuf);

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(d)?;
        if path.is_absolute() {
            Ok(AbsolutePath(path))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{}` must be an absolute path",
                path.display()
            )))
        }
    }
}
