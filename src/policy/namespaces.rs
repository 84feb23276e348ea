//! Namespaces: `NetworkMode`, `PidMode`, `IpcMode`, `UTSMode`, `UsernsMode`,
//! `CgroupnsMode` and `Cgroup`.
//!
//! `host` shares the host's namespace (rule `namespace_host`). `container:<name|id>`
//! joins another container's namespace: allowed here when the target is a
//! well-formed name or ID, because the ownership stage runs next and resolves it to
//! one of the tenant's own containers (anything else answers "No such container");
//! a malformed target is refused (rule [`RULE_NAMESPACE_CONTAINER`]). Anything the
//! daemon would not accept as a mode is refused too (rule `namespace_mode`). The daemon compares modes
//! case-sensitively (`n == "host"`); cistern compares case-insensitively, which can
//! only refuse more.

use super::{Ctx, Json, Refusal};

/// Joining another container's namespace (`container:<x>`).
pub const RULE_NAMESPACE_CONTAINER: &str = "namespace_container";

/// Which values a mode field accepts besides `host` and `container:`.
struct Mode {
    key: &'static str,
    what: &'static str,
    plain: &'static [&'static str],
    container: bool,
    host: bool,
}

const MODES: &[Mode] = &[
    Mode {
        key: "PidMode",
        what: "PID",
        plain: &[""],
        container: true,
        host: true,
    },
    Mode {
        key: "IpcMode",
        what: "IPC",
        plain: &["", "private", "shareable", "none"],
        container: true,
        host: true,
    },
    Mode {
        key: "UTSMode",
        what: "UTS",
        plain: &[""],
        container: false,
        host: true,
    },
    Mode {
        key: "UsernsMode",
        what: "user",
        plain: &[""],
        container: false,
        host: true,
    },
    Mode {
        key: "CgroupnsMode",
        what: "cgroup",
        plain: &["", "private"],
        container: false,
        host: true,
    },
    Mode {
        key: "Cgroup",
        what: "cgroup",
        plain: &[""],
        container: true,
        host: false,
    },
];

/// A Docker network name (as `NetworkMode` for a user-defined network).
fn is_network_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// A container name or ID as the daemon accepts one (an optional leading `/`).
pub fn is_container_ref(s: &str) -> bool {
    is_network_name(s.strip_prefix('/').unwrap_or(s))
}

fn container_target(v: &str) -> Option<&str> {
    let (k, rest) = v.split_once(':')?;
    k.eq_ignore_ascii_case("container").then_some(rest)
}

/// The namespace modes of a create `HostConfig`.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &Json) -> Result<(), Refusal> {
    if let Some(v) = hc.get("NetworkMode").and_then(Json::as_str) {
        let field = "HostConfig.NetworkMode";
        if v.eq_ignore_ascii_case("host") {
            ctx.deny(
                "namespace_host",
                field,
                "the host network namespace is not allowed",
            )?;
        } else if let Some(target) = container_target(v) {
            if !is_container_ref(target) {
                ctx.deny(
                    RULE_NAMESPACE_CONTAINER,
                    field,
                    format_args!("{target:?} is not a container name or ID"),
                )?;
            }
        } else if !(v.is_empty() || is_network_name(v)) {
            ctx.deny(
                "namespace_mode",
                field,
                format_args!("network mode {v:?} is not allowed"),
            )?;
        }
    }
    for m in MODES {
        let Some(v) = hc.get(m.key).and_then(Json::as_str) else {
            continue;
        };
        let field = format!("HostConfig.{}", m.key);
        if m.plain.contains(&v) {
            continue;
        }
        if m.host && v.eq_ignore_ascii_case("host") {
            ctx.deny(
                "namespace_host",
                field,
                format_args!("the host {} namespace is not allowed", m.what),
            )?;
        } else if let Some(target) = container_target(v).filter(|_| m.container) {
            if !is_container_ref(target) {
                ctx.deny(
                    RULE_NAMESPACE_CONTAINER,
                    field,
                    format_args!("{target:?} is not a container name or ID"),
                )?;
            }
        } else {
            ctx.deny(
                "namespace_mode",
                field,
                format_args!("{} {v:?} is not allowed", m.key),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;

    #[test]
    fn host_namespaces_are_refused() {
        let p = Policy::default();
        for (k, v) in [
            ("NetworkMode", "host"),
            ("NetworkMode", "HOST"),
            ("PidMode", "host"),
            ("IpcMode", "host"),
            ("UTSMode", "host"),
            ("UsernsMode", "host"),
            ("CgroupnsMode", "host"),
        ] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"{k}":"{v}"}}}}"#);
            let r = refused(&p, &body);
            assert_eq!(
                (r.rule, r.field),
                ("namespace_host", format!("HostConfig.{k}")),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn container_namespaces_pass_to_ownership_when_well_formed() {
        let p = Policy::default();
        for (k, v) in [
            ("NetworkMode", "container:web"),
            ("NetworkMode", "container:4f3c2a1b9d8e"),
            ("PidMode", "container:web"),
            ("IpcMode", "container:4f3c2a1b9d8e"),
            ("Cgroup", "container:web"),
        ] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"{k}":"{v}"}}}}"#);
            create(&p, &body).unwrap_or_else(|r| panic!("{k}={v}: {r:?}"));
        }
        for (k, v) in [
            ("NetworkMode", "container:a b"),
            ("PidMode", "container:../x"),
            ("IpcMode", "container:"),
        ] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"{k}":"{v}"}}}}"#);
            assert_eq!(
                refused(&p, &body).rule,
                super::RULE_NAMESPACE_CONTAINER,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn ordinary_modes_pass_and_odd_ones_are_refused() {
        let p = Policy::default();
        create(&p, r#"{"Image":"x","HostConfig":{"NetworkMode":"ci-net_1","PidMode":"","IpcMode":"private","CgroupnsMode":"private","UTSMode":"","UsernsMode":"","Cgroup":""}}"#).unwrap();
        for nm in ["bridge", "none", "default"] {
            create(
                &p,
                &format!(r#"{{"Image":"x","HostConfig":{{"NetworkMode":"{nm}"}}}}"#),
            )
            .unwrap();
        }
        for (k, v) in [
            ("NetworkMode", "ns:/proc/1/ns/net"),
            ("PidMode", "private"),
            ("UsernsMode", "remap"),
            ("IpcMode", "container:"),
        ] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"{k}":"{v}"}}}}"#);
            let rule = refused(&p, &body).rule;
            assert!(
                rule == "namespace_mode" || rule == super::RULE_NAMESPACE_CONTAINER,
                "{k}={v}: {rule}"
            );
        }
    }
}
