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
//!   swarm: false                #   events, system_df allowed; the rest denied
//! unknown_fields: refuse        # refuse | drop (never forwarded unchecked)
//! max_body_size: 1MiB           # bytes, or a size string (see below)
//! capabilities: [NET_BIND_SERVICE]   # CapAdd allowlist (CAP_ prefix optional)
//! bind_mounts:                  # host path prefixes a bind may use
//!   - { path: /srv/ci-cache, read_only: true }
//! sysctls: [net.ipv4.ip_unprivileged_port_start, "net.ipv4.conf.*"]
//! socket_binds: [/var/run/docker.sock, /run/docker.sock]  # the default; [] = off
//! unprivileged_images: [testcontainers/ryuk]  # Privileged dropped, not refused
//! publish_host_ip: 127.0.0.1    # force published ports onto this address
//! limits:                       # each { max, force, on_exceed: refuse|clamp }
//!   memory: { max: 4GiB }
//!   memory_swap: { max: 4GiB }
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
//! naming the cap, `clamp` lowers the value and notes it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;

use super::limits::{Limit, Limits, OnExceed};
use super::mounts::BindAllow;
use super::unprivileged::ImageName;
use super::{inject::Inject, privilege, Policy, UnknownFields};
use crate::docker::route::Group;

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
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub inject: InjectConfig,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory: Option<SizeLimitConfig>,
    pub memory_swap: Option<SizeLimitConfig>,
    pub cpus: Option<CpuLimitConfig>,
    pub pids: Option<CountLimitConfig>,
    pub shm_size: Option<SizeLimitConfig>,
    pub log_max_size: Option<SizeLimitConfig>,
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
}

/// Where clients usually find the Docker socket: what `socket_binds` maps by
/// default.
pub const DEFAULT_SOCKET_BINDS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// The groups a listener allows unless its config says otherwise.
pub const DEFAULT_GROUPS: [Group; 8] = [
    Group::System,
    Group::Containers,
    Group::Exec,
    Group::Images,
    Group::Volumes,
    Group::Networks,
    Group::Events,
    Group::SystemDf,
];

impl PolicyConfig {
    /// Validates into a typed [`Policy`] (sizes parsed once).
    pub fn validate(&self) -> Result<Policy, PolicyError> {
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
        let l = &self.limits;
        let limits = Limits {
            memory: l
                .memory
                .as_ref()
                .map(|c| size_limit("memory", c))
                .transpose()?,
            memory_swap: l
                .memory_swap
                .as_ref()
                .map(|c| size_limit("memory_swap", c))
                .transpose()?,
            nano_cpus: l.cpus.as_ref().map(cpu_limit).transpose()?,
            pids: l
                .pids
                .as_ref()
                .map(|c| count_limit("pids", c))
                .transpose()?,
            shm_size: l
                .shm_size
                .as_ref()
                .map(|c| size_limit("shm_size", c))
                .transpose()?,
            log_max_size: l
                .log_max_size
                .as_ref()
                .map(|c| size_limit("log_max_size", c))
                .transpose()?,
            ulimits: l
                .ulimits
                .iter()
                .map(|(n, c)| Ok((n.clone(), count_limit(n, c)?)))
                .collect::<Result<_, PolicyError>>()?,
        };
        if let (Some(m), Some(s)) = (&limits.memory, &limits.memory_swap) {
            if s.ceiling() < m.ceiling() {
                return Err(PolicyError::Limit(
                    "memory_swap".into(),
                    "must not be below memory (memory_swap is memory plus swap)",
                ));
            }
        }
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
            audit: self.audit,
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

fn size_limit(name: &str, c: &SizeLimitConfig) -> Result<Limit, PolicyError> {
    let max = c
        .max
        .as_ref()
        .map(|s| s.bytes().and_then(|b| to_i64(name, b)))
        .transpose()?;
    let force = c
        .force
        .as_ref()
        .map(|s| s.bytes().and_then(|b| to_i64(name, b)))
        .transpose()?;
    finish(name, max, force, c.on_exceed)
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

    #[test]
    fn groups_can_be_switched_per_listener() {
        let p = load("groups: {exec: false, swarm: true}").unwrap();
        assert!(!p.allowed_groups.contains(&Group::Exec));
        assert!(p.allowed_groups.contains(&Group::Swarm));
    }
}
