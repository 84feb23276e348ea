//! Confinement: `SecurityOpt`, `MaskedPaths`/`ReadonlyPaths` and `Sysctls`.
//!
//! `SecurityOpt` is parsed like the daemon's `parseSecurityOpt`: the bare words
//! `no-new-privileges`, `writable-cgroups` and `disable` (= `label=disable`), else
//! split at the first `=`, else (deprecated) at the first `:`. Allowed:
//! `no-new-privileges[=bool]`, `writable-cgroups=false`, `apparmor=docker-default`,
//! `seccomp=builtin` and `label=level:...` (an MCS level). Refused (rule
//! `security_opt`): `seccomp=unconfined` and **any custom seccomp profile** (a profile
//! is JSON that can simply say `"defaultAction": "SCMP_ACT_ALLOW"`, i.e.
//! unconfined, and cistern does not review profiles), `apparmor=` anything else
//! (`unconfined` or another host profile), `label=disable`, `label=type:...` (e.g.
//! `spc_t`, the SELinux "super privileged container" type), `label=user:/role:`,
//! `writable-cgroups[=true]`, and anything the daemon would not accept.
//! `systempaths=unconfined` is a CLI option: the CLI sends `MaskedPaths: []` and
//! `ReadonlyPaths: []` instead, so any client-set `MaskedPaths`/`ReadonlyPaths`
//! (even non-empty: a shorter list unmasks the rest) is refused; only `null`/absent,
//! meaning the daemon's defaults, passes.
//!
//! `Sysctls` keys must match the allowlist (exact, or a prefix ending in `*`).

use super::{Ctx, Json, Refusal};

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A parsed security option: `(key, value)`; bare words have no value.
pub fn split_opt(opt: &str) -> Option<(&str, Option<&str>)> {
    match opt {
        "no-new-privileges" | "writable-cgroups" => return Some((opt, None)),
        "disable" => return Some(("label", Some("disable"))),
        _ => {}
    }
    let (k, v) = if opt.contains('=') {
        opt.split_once('=')?
    } else {
        opt.split_once(':')?
    };
    Some((k, Some(v)))
}

fn opt_ok(opt: &str) -> bool {
    match split_opt(opt) {
        Some(("no-new-privileges", None)) => true,
        Some(("no-new-privileges", Some(v))) => parse_go_bool(v).is_some(),
        Some(("writable-cgroups", Some(v))) => parse_go_bool(v) == Some(false),
        Some(("apparmor", Some(v))) => v == "docker-default",
        Some(("seccomp", Some(v))) => v == "builtin",
        Some(("label", Some(v))) => v.starts_with("level:"),
        _ => false,
    }
}

/// `SecurityOpt`, `MaskedPaths`, `ReadonlyPaths`, `Sysctls` of a create `HostConfig`.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &Json) -> Result<(), Refusal> {
    let opts: Vec<String> = hc
        .get("SecurityOpt")
        .map(|o| o.strings().map(str::to_string).collect())
        .unwrap_or_default();
    for (i, opt) in opts.iter().enumerate() {
        if !opt_ok(opt) {
            ctx.deny(
                "security_opt",
                format!("HostConfig.SecurityOpt[{i}]"),
                format_args!("security option {opt:?} is not allowed"),
            )?;
        }
    }
    for key in ["MaskedPaths", "ReadonlyPaths"] {
        if hc.get(key).is_some() {
            let rule = if key == "MaskedPaths" {
                "masked_paths"
            } else {
                "readonly_paths"
            };
            ctx.deny(
                rule,
                format!("HostConfig.{key}"),
                format_args!("setting {key} is not allowed (the daemon's defaults apply)"),
            )?;
        }
    }
    let sysctls: Vec<String> = hc
        .get("Sysctls")
        .and_then(Json::as_object)
        .map(|m| m.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    for name in sysctls {
        let allowed = ctx
            .policy
            .sysctls
            .iter()
            .any(|a| match a.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => *a == name,
            });
        if !allowed {
            ctx.deny(
                "sysctls",
                format!("HostConfig.Sysctls.{name}"),
                format_args!("sysctl {name} is not allowed"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;

    fn opt_body(opt: &str) -> String {
        format!(
            r#"{{"Image":"x","HostConfig":{{"SecurityOpt":[{}]}}}}"#,
            serde_json::to_string(opt).unwrap()
        )
    }

    #[test]
    fn loosening_security_options_are_refused() {
        let p = Policy::default();
        for opt in [
            "seccomp=unconfined",
            "seccomp:unconfined",
            r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#,
            "apparmor=unconfined",
            "apparmor:unconfined",
            "apparmor=my-host-profile",
            "label=disable",
            "label:disable",
            "disable",
            "label=type:spc_t",
            "label=user:system_u",
            "systempaths=unconfined",
            "writable-cgroups",
            "writable-cgroups=true",
            "no-new-privileges=maybe",
            "bogus",
            "",
        ] {
            let r = refused(&p, &opt_body(opt));
            assert_eq!(
                (r.rule, r.field.as_str()),
                ("security_opt", "HostConfig.SecurityOpt[0]"),
                "{opt}"
            );
        }
    }

    #[test]
    fn tightening_security_options_pass() {
        let p = Policy::default();
        for opt in [
            "no-new-privileges",
            "no-new-privileges=true",
            "no-new-privileges:true",
            "no-new-privileges=false",
            "apparmor=docker-default",
            "seccomp=builtin",
            "label=level:s0:c100,c200",
            "writable-cgroups=false",
        ] {
            create(&p, &opt_body(opt)).unwrap_or_else(|e| panic!("{opt}: {e}"));
        }
    }

    #[test]
    fn masked_and_readonly_paths_are_refused_when_set() {
        let p = Policy::default();
        assert_eq!(
            refused(&p, r#"{"Image":"x","HostConfig":{"MaskedPaths":[]}}"#).rule,
            "masked_paths"
        );
        assert_eq!(
            refused(
                &p,
                r#"{"Image":"x","HostConfig":{"ReadonlyPaths":["/proc/sys"]}}"#
            )
            .rule,
            "readonly_paths"
        );
        create(
            &p,
            r#"{"Image":"x","HostConfig":{"MaskedPaths":null,"ReadonlyPaths":null}}"#,
        )
        .unwrap();
    }

    #[test]
    fn sysctls_follow_the_allowlist() {
        let p = policy_yaml("sysctls: [net.ipv4.ip_unprivileged_port_start, 'net.ipv6.conf.*']");
        create(&p, r#"{"Image":"x","HostConfig":{"Sysctls":{"net.ipv4.ip_unprivileged_port_start":"0","net.ipv6.conf.all.disable_ipv6":"1"}}}"#).unwrap();
        let r = refused(
            &p,
            r#"{"Image":"x","HostConfig":{"Sysctls":{"kernel.shm_rmid_forced":"1"}}}"#,
        );
        assert_eq!(
            (r.rule, r.field.as_str()),
            ("sysctls", "HostConfig.Sysctls.kernel.shm_rmid_forced")
        );
        assert_eq!(
            refused(
                &Policy::default(),
                r#"{"Image":"x","HostConfig":{"Sysctls":{"net.ipv4.ip_forward":"1"}}}"#
            )
            .rule,
            "sysctls"
        );
        create(
            &Policy::default(),
            r#"{"Image":"x","HostConfig":{"Sysctls":{}}}"#,
        )
        .unwrap();
    }
}
