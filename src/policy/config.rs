//! A listener's policy as written in the config file (raw, `deny_unknown_fields`),
//! and its validation into the typed [`Policy`].
//!
//! Every field is optional; an empty policy is the built-in `conservative` policy:
//!
//! ```yaml
//! name: conservative            # shown in refusal messages
//! audit: false                  # true: log would-be refusals, forward anyway
//! groups:                       # per-group switches over the defaults: system,
//!   exec: false                 #   containers, exec, images, volumes, networks,
//!   swarm: false                #   events, system_df, session (BuildKit) allowed;
//!   session: false              #   the rest denied; session off: no BuildKit
//! unknown_fields: refuse        # refuse | drop (never forwarded unchecked)
//! max_body_size: 1MiB           # bytes, or a size string (see below)
//! capabilities: [NET_BIND_SERVICE]   # CapAdd allowlist (CAP_ prefix optional)
//! bind_mounts:                  # host path prefixes a bind may use
//!   - { path: /srv/ci-cache, read_only: true }
//! sysctls: [net.ipv4.ip_unprivileged_port_start, "net.ipv4.conf.*"]
//! socket_binds: [/var/run/docker.sock, /run/docker.sock]  # the default; [] = off
//! unprivileged_images: [testcontainers/ryuk]  # Privileged dropped, not refused
//! publish_host_ip: 127.0.0.1    # force published ports onto this address
//! buildkit:                     # BuildKit `/grpc` calls: what they may do
//!   allow: [network.host]       #   beyond the defaults (policy::grpc)
//! limits:                       # each { max, force, on_exceed: refuse|clamp },
//!   memory: { max: 4GiB }       #   or null/none to lift it; `limits: none`
//!   memory_swap: { max: 4GiB }  #   lifts them all
//!   cpus: { max: 2 }            # CPUs, fractions allowed
//!   pids: { max: 4096 }
//!   shm_size: { max: 1GiB }
//!   log_max_size: { max: 100MiB, on_exceed: clamp }
//!   ulimits: { nofile: { max: 1048576 } }
//! inject:
//!   labels: { ci.cistern: "1" }
//!   cgroup_parent: /ci.slice
//!   env: [HTTP_PROXY=http://cache:3128]
//!   extra_hosts: ["cache:10.0.0.2"]
//!   no_new_privileges: true
//!   init: true
//! ```
//!
//! Sizes are a non-negative integer of bytes or a string: a number followed by
//! `B`, binary `KiB`/`MiB`/`GiB`/`TiB`, decimal `kB`/`KB`/`MB`/`GB`/`TB`, or
//! Docker's own short forms `k`/`m`/`g`/`t` (binary, as in `docker run -m 1g`).
//!
//! A limit's `max` caps what a client may ask for, and is also set when the client
//! asks for nothing (absent means unlimited to the daemon). `force` sets the value
//! whatever the client asked. Over `max`: `on_exceed: refuse` (default) refuses
//! naming the cap, `clamp` lowers the value and notes it. `memory` and
//! `memory_swap` also take a percentage of the host's RAM (`max: 25%`, see
//! [`host`](super::host)).
//!
//! A limit left out takes its default; `null` or `none` lifts it, and
//! `limits: none` lifts every one. The defaults ([`limits`](super::limits)) keep
//! one job from taking the host down: `memory` at half the host's RAM (between
//! 1 GiB and 64 GiB; below an explicit `memory_swap`), `memory_swap` at the
//! memory cap (so no swap unless a client asks for some within it), `pids` at
//! 4096; the others are unlimited.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::host::Host;
use super::limits::{self, Limit, Limits, OnExceed};
use super::mounts::BindAllow;
use super::unprivileged::ImageName;
use super::{inject::Inject, privilege, Policy, UnknownFields};
use crate::wire::route::Group;

/// A policy as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: Option<String>,
    #[serde(default)]
    pub audit: bool,
    #[serde(default)]
    pub groups: BTreeMap<String, bool>,
    pub unknown_fields: Option<UnknownFields>,
    pub max_body_size: Option<Size>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub bind_mounts: Vec<BindMountConfig>,
    #[serde(default)]
    pub sysctls: Vec<String>,
    /// Host paths clients know the Docker socket by; `None`: the defaults.
    pub socket_binds: Option<Vec<String>>,
    #[serde(default)]
    pub unprivileged_images: Vec<String>,
    pub publish_host_ip: Option<IpAddr>,
    /// Absent: the default limits; `none`: no limits at all.
    #[serde(default)]
    pub limits: Setting<LimitsConfig>,
    #[serde(default)]
    pub inject: InjectConfig,
    #[serde(default)]
    pub buildkit: BuildkitConfig,
}

/// `buildkit:` ([`super::grpc`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildkitConfig {
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A size: bytes, or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMountConfig {
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A size limit: `max` and `force` are sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeLimitConfig {
    pub max: Option<Size>,
    pub force: Option<Size>,
    pub on_exceed: Option<OnExceed>,
}

/// A count limit (`pids`, ulimits): plain integers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountLimitConfig {
    pub max: Option<i64>,
    pub force: Option<i64>,
    pub on_exceed: Option<OnExceed>,
}

/// A CPU limit in CPUs (`1.5`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuLimitConfig {
    pub max: Option<f64>,
    pub force: Option<f64>,
    pub on_exceed: Option<OnExceed>,
}

/// A limit as written: left out (its default), lifted (`null` or `none`), or set.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Setting<T> {
    #[default]
    Default,
    Lifted,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SettingVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for SettingVisitor<T> {
            type Value = Setting<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping, or `none` to lift the limit")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Setting<T>, E> {
                Ok(Setting::Lifted)
            }
            fn visit_none<E: de::Error>(self) -> Result<Setting<T>, E> {
                Ok(Setting::Lifted)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Setting<T>, D::Error> {
                Setting::deserialize(d)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Setting<T>, E> {
                match s {
                    "none" => Ok(Setting::Lifted),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Setting<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Setting::Set)
            }
        }
        d.deserialize_any(SettingVisitor(std::marker::PhantomData))
    }
}

/// `limits:`; a key left out takes its default (see the module docs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub memory: Setting<SizeLimitConfig>,
    #[serde(default)]
    pub memory_swap: Setting<SizeLimitConfig>,
    #[serde(default)]
    pub cpus: Setting<CpuLimitConfig>,
    #[serde(default)]
    pub pids: Setting<CountLimitConfig>,
    #[serde(default)]
    pub shm_size: Setting<SizeLimitConfig>,
    #[serde(default)]
    pub log_max_size: Setting<SizeLimitConfig>,
    #[serde(default)]
    pub ulimits: BTreeMap<String, CountLimitConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectConfig {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub cgroup_parent: Option<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub init: bool,
}

/// Why a policy config does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown endpoint group {0:?}")]
    UnknownGroup(String),
    #[error("invalid size {0:?}")]
    Size(String),
    #[error("invalid capability {0:?}")]
    Capability(String),
    #[error("bind mount path {0:?} must be absolute and clean (no `.`/`..`, not `/`)")]
    BindPath(String),
    #[error("invalid sysctl pattern {0:?}")]
    Sysctl(String),
    #[error("limit {0}: {1}")]
    Limit(String, &'static str),
    #[error("inject.env entry {0:?} must be NAME=VALUE")]
    Env(String),
    #[error("inject.extra_hosts entry {0:?} must be HOST:IP")]
    ExtraHost(String),
    #[error("inject.cgroup_parent must not be empty")]
    CgroupParent,
    #[error("socket_binds entry {0:?} must be an absolute path other than `/`")]
    SocketBind(String),
    #[error(
        "unprivileged_images entry {0:?} must be an image name (with an optional tag, no digest)"
    )]
    Image(String),
    #[error("{0}")]
    Buildkit(String),
}

/// Where clients usually find the Docker socket: what `socket_binds` maps by
/// default.
pub const DEFAULT_SOCKET_BINDS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// The groups a listener allows unless its config says otherwise.
pub const DEFAULT_GROUPS: [Group; 9] = [
    Group::System,
    Group::Containers,
    Group::Exec,
    Group::Images,
    Group::Volumes,
    Group::Networks,
    Group::Events,
    Group::SystemDf,
    // BuildKit's `/session` (the client's own file server) and `/grpc`
    // (its control API, judged call by call: `crate::buildkit`).
    Group::Session,
];

impl PolicyConfig {
    /// Validates into a typed [`Policy`] (sizes parsed once), with limits sized
    /// from this host ([`Host::current`]).
    pub fn validate(&self) -> Result<Policy, PolicyError> {
        self.validate_on(Host::current())
    }

    /// Validates into a typed [`Policy`], with limits sized from `host`.
    pub fn validate_on(&self, host: Host) -> Result<Policy, PolicyError> {
        let mut allowed_groups: BTreeSet<Group> = DEFAULT_GROUPS.into_iter().collect();
        for (name, on) in &self.groups {
            let g =
                Group::from_name(name).ok_or_else(|| PolicyError::UnknownGroup(name.clone()))?;
            if *on {
                allowed_groups.insert(g);
            } else {
                allowed_groups.remove(&g);
            }
        }
        let max_body_size = match &self.max_body_size {
            Some(s) => {
                usize::try_from(s.bytes()?).map_err(|_| PolicyError::Size(format!("{s:?}")))?
            }
            None => 1 << 20,
        };
        let capabilities = self
            .capabilities
            .iter()
            .map(|c| privilege::canonical_cap(c).ok_or_else(|| PolicyError::Capability(c.clone())))
            .collect::<Result<_, _>>()?;
        let bind_mounts = self
            .bind_mounts
            .iter()
            .map(|b| {
                BindAllow::new(&b.path, b.read_only)
                    .ok_or_else(|| PolicyError::BindPath(b.path.clone()))
            })
            .collect::<Result<_, _>>()?;
        for s in &self.sysctls {
            let body = s.strip_suffix('*').unwrap_or(s);
            if body.is_empty()
                || body.contains('*')
                || !body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            {
                return Err(PolicyError::Sysctl(s.clone()));
            }
        }
        let limits = self.limits(host)?;
        let i = &self.inject;
        for e in &i.env {
            match e.split_once('=') {
                Some((name, _)) if !name.is_empty() => {}
                _ => return Err(PolicyError::Env(e.clone())),
            }
        }
        for h in &i.extra_hosts {
            match h.split_once(':') {
                Some((name, ip)) if !name.is_empty() && !ip.is_empty() => {}
                _ => return Err(PolicyError::ExtraHost(h.clone())),
            }
        }
        if i.cgroup_parent.as_deref() == Some("") {
            return Err(PolicyError::CgroupParent);
        }
        let socket_binds = match &self.socket_binds {
            Some(paths) => paths.clone(),
            None => DEFAULT_SOCKET_BINDS.map(str::to_string).to_vec(),
        };
        for p in &socket_binds {
            if !p.starts_with('/') || p.split('/').all(str::is_empty) {
                return Err(PolicyError::SocketBind(p.clone()));
            }
        }
        let unprivileged_images = self
            .unprivileged_images
            .iter()
            .map(|e| ImageName::parse(e).ok_or_else(|| PolicyError::Image(e.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            name: self.name.clone().unwrap_or_else(|| "conservative".into()),
            allowed_groups,
            unknown_fields: self.unknown_fields.unwrap_or(UnknownFields::Refuse),
            max_body_size,
            capabilities,
            bind_mounts,
            sysctls: self.sysctls.clone(),
            limits,
            publish_host_ip: self.publish_host_ip,
            inject: Inject {
                labels: i.labels.clone().into_iter().collect(),
                cgroup_parent: i.cgroup_parent.clone(),
                env: i.env.clone(),
                extra_hosts: i.extra_hosts.clone(),
                no_new_privileges: i.no_new_privileges,
                init: i.init,
            },
            socket_binds,
            unprivileged_images,
            grpc: super::grpc::Allow::parse(self.buildkit.allow.iter().map(String::as_str))
                .map_err(PolicyError::Buildkit)?,
            audit: self.audit,
        })
    }
}

impl PolicyConfig {
    /// The typed limits: each one set, defaulted or lifted.
    fn limits(&self, host: Host) -> Result<Limits, PolicyError> {
        let defaults = LimitsConfig::default();
        let l = match &self.limits {
            Setting::Lifted => return Ok(Limits::default()),
            Setting::Default => &defaults,
            Setting::Set(l) => l,
        };
        let explicit_swap = match &l.memory_swap {
            Setting::Set(c) => Some(size_limit("memory_swap", c, Some(host))?),
            _ => None,
        };
        let memory = match &l.memory {
            Setting::Set(c) => Some(size_limit("memory", c, Some(host))?),
            Setting::Lifted => None,
            // Never above an explicit memory+swap cap, which would make the
            // config's validity depend on the host.
            Setting::Default => Some(Limit::cap(
                explicit_swap
                    .as_ref()
                    .map_or(i64::MAX, Limit::ceiling)
                    .min(limits::default_memory(host)),
            )),
        };
        let memory_swap = match (&l.memory_swap, &memory) {
            (Setting::Set(_), None) => {
                return Err(PolicyError::Limit(
                    "memory_swap".into(),
                    "needs a memory limit (the daemon refuses a swap limit without one)",
                ))
            }
            (Setting::Set(_), Some(_)) => explicit_swap,
            (Setting::Lifted, _) => None,
            // Memory plus swap at the memory cap: no swap beyond it.
            (Setting::Default, m) => m.as_ref().map(|m| Limit {
                max: Some(m.ceiling()),
                force: None,
                on_exceed: m.on_exceed,
            }),
        };
        if let (Some(m), Some(s)) = (&memory, &memory_swap) {
            if s.ceiling() < m.ceiling() {
                return Err(PolicyError::Limit(
                    "memory_swap".into(),
                    "must not be below memory (memory_swap is memory plus swap)",
                ));
            }
        }
        Ok(Limits {
            memory,
            memory_swap,
            nano_cpus: match &l.cpus {
                Setting::Set(c) => Some(cpu_limit(c)?),
                _ => None,
            },
            pids: match &l.pids {
                Setting::Set(c) => Some(count_limit("pids", c)?),
                Setting::Lifted => None,
                Setting::Default => Some(Limit::cap(limits::DEFAULT_PIDS)),
            },
            shm_size: match &l.shm_size {
                Setting::Set(c) => Some(size_limit("shm_size", c, None)?),
                _ => None,
            },
            log_max_size: match &l.log_max_size {
                Setting::Set(c) => Some(size_limit("log_max_size", c, None)?),
                _ => None,
            },
            ulimits: l
                .ulimits
                .iter()
                .map(|(n, c)| Ok((n.clone(), count_limit(n, c)?)))
                .collect::<Result<_, PolicyError>>()?,
        })
    }
}

impl Size {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, PolicyError> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t).ok_or_else(|| PolicyError::Size(t.clone())),
        }
    }
}

/// Parses `512MiB`, `1.5GiB`, `100MB`, `1g`, `4096`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" => 1 << 10,
        "MiB" | "m" => 1 << 20,
        "GiB" | "g" => 1 << 30,
        "TiB" | "t" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    let bytes = f * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn to_i64(name: &str, n: u64) -> Result<i64, PolicyError> {
    i64::try_from(n).map_err(|_| PolicyError::Limit(name.into(), "too large"))
}

fn finish(
    name: &str,
    max: Option<i64>,
    force: Option<i64>,
    on_exceed: Option<OnExceed>,
) -> Result<Limit, PolicyError> {
    if max.is_none() && force.is_none() {
        return Err(PolicyError::Limit(name.into(), "needs max or force"));
    }
    if max.is_some_and(|m| m <= 0) || force.is_some_and(|f| f <= 0) {
        return Err(PolicyError::Limit(name.into(), "must be positive"));
    }
    if let (Some(m), Some(f)) = (max, force) {
        if f > m {
            return Err(PolicyError::Limit(name.into(), "force is above max"));
        }
    }
    Ok(Limit {
        max,
        force,
        on_exceed: on_exceed.unwrap_or(OnExceed::Refuse),
    })
}

/// A size limit; with a `host`, a percentage of its RAM (`25%`) counts too.
fn size_limit(name: &str, c: &SizeLimitConfig, host: Option<Host>) -> Result<Limit, PolicyError> {
    let bytes = |s: &Size| -> Result<i64, PolicyError> {
        match (s, host) {
            (Size::Text(t), Some(host)) if t.trim_end().ends_with('%') => {
                let share = host_share(name, t, host)?;
                to_i64(name, share)
            }
            _ => s.bytes().and_then(|b| to_i64(name, b)),
        }
    };
    let max = c.max.as_ref().map(bytes).transpose()?;
    let force = c.force.as_ref().map(bytes).transpose()?;
    finish(name, max, force, c.on_exceed)
}

/// `25%` of the host's RAM, in bytes.
fn host_share(name: &str, text: &str, host: Host) -> Result<u64, PolicyError> {
    let percent: f64 = text
        .trim()
        .trim_end_matches('%')
        .trim_end()
        .parse()
        .map_err(|_| PolicyError::Size(text.to_string()))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(PolicyError::Limit(
            name.into(),
            "a percentage of the host's RAM must be above 0 and at most 100",
        ));
    }
    let Some(ram) = host.memory else {
        return Err(PolicyError::Limit(
            name.into(),
            "a percentage needs the host's RAM, and /proc/meminfo cannot be read",
        ));
    };
    Ok((ram as f64 * percent / 100.0) as u64)
}

fn count_limit(name: &str, c: &CountLimitConfig) -> Result<Limit, PolicyError> {
    finish(name, c.max, c.force, c.on_exceed)
}

fn cpu_limit(c: &CpuLimitConfig) -> Result<Limit, PolicyError> {
    let nano = |f: f64| -> Result<i64, PolicyError> {
        let n = f * 1e9;
        if n.is_finite() && n >= 1.0 && n < i64::MAX as f64 {
            Ok(n.round() as i64)
        } else {
            Err(PolicyError::Limit(
                "cpus".into(),
                "must be a positive number of CPUs",
            ))
        }
    };
    finish(
        "cpus",
        c.max.map(nano).transpose()?,
        c.force.map(nano).transpose()?,
        c.on_exceed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Policy, String> {
        let c: PolicyConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn empty_config_is_the_conservative_policy() {
        let p = load("{}").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.name, "conservative");
        assert_eq!(p.max_body_size, 1 << 20);
        assert_eq!(p.unknown_fields, UnknownFields::Refuse);
        assert!(p.capabilities.is_empty() && p.bind_mounts.is_empty() && p.sysctls.is_empty());
        assert_eq!(p.allowed_groups, DEFAULT_GROUPS.into_iter().collect());
        assert!(!p.audit);
    }

    #[test]
    fn the_documented_example_loads() {
        let doc = include_str!("config.rs");
        let yaml: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.strip_prefix("//! ").unwrap_or("")))
            .collect();
        let p = load(&yaml).unwrap();
        assert!(!p.allowed_groups.contains(&Group::Exec));
        assert!(p.capabilities.contains("CAP_NET_BIND_SERVICE"));
        assert_eq!(p.limits.memory.as_ref().unwrap().max, Some(4 << 30));
        assert_eq!(
            p.limits.nano_cpus.as_ref().unwrap().max,
            Some(2_000_000_000)
        );
        assert_eq!(
            p.limits.log_max_size.as_ref().unwrap().on_exceed,
            OnExceed::Clamp
        );
        assert_eq!(
            p.inject.labels,
            vec![("ci.cistern".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn sizes_parse_once() {
        for (t, n) in [
            ("1MiB", 1 << 20),
            ("1.5GiB", 3 << 29),
            ("100MB", 100_000_000),
            ("1g", 1 << 30),
            ("4096", 4096),
            ("64 KiB", 64 << 10),
        ] {
            assert_eq!(parse_size(t), Some(n), "{t}");
        }
        for t in ["", "MiB", "1XB", "-1", "1e3", "1.2.3MiB"] {
            assert_eq!(parse_size(t), None, "{t}");
        }
        assert_eq!(load("max_body_size: 65536").unwrap().max_body_size, 65536);
        assert_eq!(load("max_body_size: 2MiB").unwrap().max_body_size, 2 << 20);
    }

    #[test]
    fn bad_configs_are_refused() {
        for (yaml, want) in [
            ("bogus: 1", "unknown field"),
            ("groups: {swarmm: true}", "unknown endpoint group"),
            ("unknown_fields: allow_all", "unknown variant"),
            ("max_body_size: lots", "invalid size"),
            ("capabilities: ['SYS ADMIN']", "invalid capability"),
            ("bind_mounts: [{path: data}]", "must be absolute"),
            ("bind_mounts: [{path: /data/../etc}]", "must be absolute"),
            ("bind_mounts: [{path: /}]", "must be absolute"),
            ("bind_mounts: [{path: /data, ro: true}]", "unknown field"),
            ("limits: {memory: {}}", "needs max or force"),
            (
                "limits: {memory: {max: 1GiB, force: 2GiB}}",
                "force is above max",
            ),
            (
                "limits: {memory: {max: 2GiB}, memory_swap: {max: 1GiB}}",
                "must not be below memory",
            ),
            ("limits: {cpus: {max: 0}}", "positive number of CPUs"),
            ("limits: {pids: {max: -1}}", "must be positive"),
            (
                "limits: {memory: {max: 1GiB, on_exceed: ignore}}",
                "unknown variant",
            ),
            ("inject: {env: [NOVALUE]}", "NAME=VALUE"),
            ("inject: {extra_hosts: [cache]}", "HOST:IP"),
            ("sysctls: ['net.*.x']", "invalid sysctl"),
        ] {
            let e = load(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    fn limits_on(yaml: &str, ram: Option<u64>) -> Result<Limits, String> {
        let c: PolicyConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate_on(Host { memory: ram })
            .map(|p| p.limits)
            .map_err(|e| e.to_string())
    }

    fn caps(l: &Limits) -> [Option<i64>; 3] {
        [&l.memory, &l.memory_swap, &l.pids].map(|l| l.as_ref().map(Limit::ceiling))
    }

    const GIB: i64 = 1 << 30;
    const HOST: Option<u64> = Some(16 << 30);

    #[test]
    fn limits_left_out_take_the_host_sized_defaults() {
        for yaml in ["{}", "limits: {}", "limits: {cpus: {max: 2}}", "name: ci"] {
            let l = limits_on(yaml, HOST).unwrap();
            assert_eq!(
                caps(&l),
                [Some(8 * GIB), Some(8 * GIB), Some(4096)],
                "{yaml}"
            );
            assert_eq!(l.memory.as_ref().unwrap().on_exceed, OnExceed::Refuse);
            assert!(l.shm_size.is_none() && l.log_max_size.is_none() && l.ulimits.is_empty());
        }
        assert_eq!(
            limits_on("limits: {cpus: {max: 2}}", HOST)
                .unwrap()
                .nano_cpus,
            Some(Limit::cap(2_000_000_000))
        );
        // The built-in policy is the same on this host.
        assert_eq!(
            Policy::default().limits,
            limits_on("{}", Host::current().memory).unwrap()
        );
    }

    #[test]
    fn the_swap_default_follows_the_memory_cap_and_memory_stays_below_swap() {
        let l = limits_on("limits: {memory: {max: 2GiB, on_exceed: clamp}}", HOST).unwrap();
        assert_eq!(caps(&l), [Some(2 * GIB), Some(2 * GIB), Some(4096)]);
        assert_eq!(l.memory_swap.unwrap().on_exceed, OnExceed::Clamp);
        let l = limits_on("limits: {memory: {force: 512MiB}}", HOST).unwrap();
        assert_eq!(caps(&l)[1], Some(512 << 20));
        // An explicit swap cap below the host-sized memory default lowers it,
        // so that the config is valid on any host.
        let l = limits_on("limits: {memory_swap: {max: 2GiB}}", HOST).unwrap();
        assert_eq!(caps(&l), [Some(2 * GIB), Some(2 * GIB), Some(4096)]);
        let l = limits_on("limits: {memory_swap: {max: 32GiB}}", HOST).unwrap();
        assert_eq!(caps(&l), [Some(8 * GIB), Some(32 * GIB), Some(4096)]);
    }

    #[test]
    fn limits_are_lifted_one_by_one_or_all_at_once() {
        for yaml in [
            "limits: none",
            "limits: null",
            "limits: {memory: null, memory_swap: null, pids: null}",
            "limits: {memory: none, pids: ~}",
        ] {
            assert_eq!(limits_on(yaml, HOST).unwrap(), Limits::default(), "{yaml}");
        }
        let l = limits_on("limits: {pids: none}", HOST).unwrap();
        assert_eq!(caps(&l), [Some(8 * GIB), Some(8 * GIB), None]);
        let l = limits_on("limits: {memory_swap: none}", HOST).unwrap();
        assert_eq!(caps(&l), [Some(8 * GIB), None, Some(4096)]);
        let l = limits_on("limits: {memory: none}", HOST).unwrap();
        assert_eq!(caps(&l), [None, None, Some(4096)]);
    }

    #[test]
    fn memory_takes_a_percentage_of_the_host() {
        let l = limits_on(
            "limits: {memory: {max: 25%}, memory_swap: {max: '37.5 %'}}",
            HOST,
        )
        .unwrap();
        assert_eq!(caps(&l)[..2], [Some(4 * GIB), Some(6 * GIB)]);
        for (yaml, ram, want) in [
            (
                "limits: {memory: {max: 0%}}",
                HOST,
                "above 0 and at most 100",
            ),
            (
                "limits: {memory: {max: 150%}}",
                HOST,
                "above 0 and at most 100",
            ),
            ("limits: {memory: {max: x%}}", HOST, "invalid size"),
            (
                "limits: {memory: {max: 25%}}",
                None,
                "/proc/meminfo cannot be read",
            ),
            ("limits: {shm_size: {max: 25%}}", HOST, "invalid size"),
            ("max_body_size: 25%", HOST, "invalid size"),
        ] {
            let e = limits_on(yaml, ram).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn bad_limit_settings_are_refused() {
        for (yaml, want) in [
            (
                "limits: {memory: none, memory_swap: {max: 1GiB}}",
                "memory_swap: needs a memory limit",
            ),
            ("limits: {pids: unlimited}", "a mapping, or `none`"),
            ("limits: {pids: -1}", "a mapping, or `none`"),
            ("limits: unlimited", "a mapping, or `none`"),
            ("limits: {pids: {max: 1, cap: 2}}", "unknown field `cap`"),
            ("limits: {bogus: none}", "unknown field `bogus`"),
        ] {
            let e = limits_on(yaml, HOST).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn groups_can_be_switched_per_listener() {
        let p = load("groups: {exec: false, swarm: true}").unwrap();
        assert!(!p.allowed_groups.contains(&Group::Exec));
        assert!(p.allowed_groups.contains(&Group::Swarm));
    }
}
