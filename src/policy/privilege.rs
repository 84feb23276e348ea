//! Privilege: `Privileged` containers and execs, and `CapAdd` beyond the allowlist.
//!
//! Judged by value: `"Privileged": false` and `"CapAdd": null` / `[]` pass.
//! Capabilities are normalised like the daemon's `NormalizeLegacyCapabilities`
//! (upper-case, `CAP_` prefix added, `ALL` kept). Go's `strings.ToUpper` also maps
//! some non-ASCII letters onto ASCII ones (`ſ` → `S`, `ı` → `I`), so a capability with
//! any non-ASCII character is refused rather than guessed at.

use super::{Ctx, Json, Refusal};

/// The canonical form of a capability name (`net_admin` → `CAP_NET_ADMIN`), or
/// `None` for names that are not plain ASCII capability names.
pub fn canonical_cap(name: &str) -> Option<String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let up = name.to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        Some(up)
    } else {
        Some(format!("CAP_{up}"))
    }
}

/// `HostConfig.Privileged` and `HostConfig.CapAdd` on container create.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &Json) -> Result<(), Refusal> {
    if hc.get("Privileged").and_then(Json::as_bool) == Some(true) {
        ctx.deny(
            "privileged",
            "HostConfig.Privileged",
            "privileged containers are not allowed",
        )?;
    }
    let caps: Vec<String> = hc
        .get("CapAdd")
        .map(|c| c.strings().map(str::to_string).collect())
        .unwrap_or_default();
    for cap in caps {
        match canonical_cap(&cap) {
            Some(c) if ctx.policy.capabilities.contains(&c) => {}
            Some(c) => ctx.deny(
                "cap_add",
                "HostConfig.CapAdd",
                format_args!("capability {c} is not allowed"),
            )?,
            None => ctx.deny(
                "cap_add",
                "HostConfig.CapAdd",
                format_args!("capability {cap:?} is not allowed"),
            )?,
        }
    }
    Ok(())
}

/// `Privileged` on exec create.
pub fn exec_create(ctx: &mut Ctx<'_>, body: &Json) -> Result<(), Refusal> {
    if body.get("Privileged").and_then(Json::as_bool) == Some(true) {
        ctx.deny(
            "privileged_exec",
            "Privileged",
            "privileged exec is not allowed",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;
    use super::*;

    #[test]
    fn privileged_is_refused_by_value() {
        let p = Policy::default();
        assert_eq!(
            refused(&p, r#"{"Image":"x","HostConfig":{"Privileged":true}}"#).rule,
            "privileged"
        );
        create(&p, r#"{"Image":"x","HostConfig":{"Privileged":false}}"#).unwrap();
    }

    #[test]
    fn privileged_exec_is_refused() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/containers/c/exec");
        let e = p
            .inspect_body(&r, br#"{"Cmd":["sh"],"privileged":true}"#)
            .unwrap_err();
        assert_eq!(
            (e.rule, e.field.as_str()),
            ("privileged_exec", "Privileged")
        );
        // root inside a non-privileged container is fine, and so is Env.
        p.inspect_body(
            &r,
            br#"{"Cmd":["sh"],"User":"root","Privileged":false,"Env":["A=1"]}"#,
        )
        .unwrap();
    }

    #[test]
    fn cap_add_is_normalised_and_checked_against_the_allowlist() {
        let p = policy_yaml("capabilities: [net_bind_service]");
        for caps in [
            r#"["SYS_ADMIN"]"#,
            r#"["cap_sys_admin"]"#,
            r#"["ALL"]"#,
            r#""all""#,
            r#"["\u017Fys_admin"]"#,
            r#"["NET_BIND_SERVICE","SYS_PTRACE"]"#,
        ] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"CapAdd":{caps}}}}}"#);
            assert_eq!(refused(&p, &body).rule, "cap_add", "{caps}");
        }
        for caps in [
            r#"["NET_BIND_SERVICE"]"#,
            r#"["cap_net_bind_service"]"#,
            r#""Net_Bind_Service""#,
            "[]",
            "null",
        ] {
            let body =
                format!(r#"{{"Image":"x","HostConfig":{{"CapAdd":{caps},"CapDrop":["ALL"]}}}}"#);
            create(&p, &body).unwrap();
        }
    }

    #[test]
    fn canonical_cap_matches_docker() {
        assert_eq!(canonical_cap("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(
            canonical_cap("CAP_NET_ADMIN").as_deref(),
            Some("CAP_NET_ADMIN")
        );
        assert_eq!(canonical_cap("all").as_deref(), Some("ALL"));
        assert_eq!(canonical_cap("SYS ADMIN"), None);
        assert_eq!(canonical_cap("\u{17f}ys_admin"), None);
    }
}
