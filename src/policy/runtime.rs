//! Runtime and cgroup placement: `Runtime`, `Isolation`, `Annotations`,
//! `OomScoreAdj`, `LogConfig.Type`, and in `Resources` (create and update):
//! `CgroupParent`, `OomKillDisable`, real-time CPU.
//!
//! * `Runtime`: only the default (`""`, `runc`, `io.containerd.runc.v2`); another
//!   configured runtime may be anything the host admin set up.
//! * `Isolation`: `""`/`default` only (the others are Windows).
//! * `Annotations` (current moby) are handed to the OCI runtime, and some runtimes
//!   act on them: refused when non-empty.
//! * A client-set `CgroupParent` escapes the listener's cgroup (cistern injects its
//!   own); `OomKillDisable: true` and a negative `OomScoreAdj` let a container hog
//!   host memory unkillably; `CpuRealtimeRuntime`/`CpuRealtimePeriod` grant real-time
//!   scheduling.
//! * `LogConfig.Type`: only `json-file`, `local`, `none` or the daemon default. Other
//!   drivers make the daemon connect out (`syslog`, `gelf`, `fluentd`, `splunk`...)
//!   or write to host facilities (`journald`).

use super::{Ctx, Json, Refusal};

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The non-`Resources` fields of a create `HostConfig`.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &Json) -> Result<(), Refusal> {
    if let Some(r) = hc.get("Runtime").and_then(Json::as_str) {
        if !["", "runc", "io.containerd.runc.v2"].contains(&r) {
            ctx.deny(
                "runtime",
                "HostConfig.Runtime",
                format_args!("runtime {r:?} is not allowed"),
            )?;
        }
    }
    if let Some(i) = hc.get("Isolation").and_then(Json::as_str) {
        if !["", "default"].contains(&i) {
            ctx.deny(
                "isolation",
                "HostConfig.Isolation",
                format_args!("isolation {i:?} is not allowed"),
            )?;
        }
    }
    if hc
        .get("Annotations")
        .and_then(Json::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        ctx.deny(
            "annotations",
            "HostConfig.Annotations",
            "runtime annotations are not allowed",
        )?;
    }
    if hc
        .get("OomScoreAdj")
        .and_then(Json::as_i64)
        .is_some_and(|n| n < 0)
    {
        ctx.deny(
            "oom_score_adj",
            "HostConfig.OomScoreAdj",
            "a negative OOM score adjustment is not allowed",
        )?;
    }
    if let Some(t) = hc.at(&["LogConfig", "Type"]).and_then(Json::as_str) {
        if !["", "json-file", "local", "none"].contains(&t) {
            ctx.deny(
                "log_driver",
                "HostConfig.LogConfig.Type",
                format_args!("log driver {t:?} is not allowed"),
            )?;
        }
    }
    Ok(())
}

/// The `Resources` fields this file owns (`HostConfig` on create, the update body).
pub fn resources(ctx: &mut Ctx<'_>, res: &Json, prefix: &str) -> Result<(), Refusal> {
    // The listener's own injected value is what cistern would set anyway.
    let injected = ctx.policy.inject.cgroup_parent.as_deref();
    if res
        .get("CgroupParent")
        .and_then(Json::as_str)
        .is_some_and(|s| !s.is_empty() && Some(s) != injected)
    {
        ctx.deny(
            "cgroup_parent",
            field(prefix, "CgroupParent"),
            "choosing the cgroup parent is not allowed",
        )?;
    }
    if res.get("OomKillDisable").and_then(Json::as_bool) == Some(true) {
        ctx.deny(
            "oom_kill_disable",
            field(prefix, "OomKillDisable"),
            "disabling the OOM killer is not allowed",
        )?;
    }
    for key in ["CpuRealtimeRuntime", "CpuRealtimePeriod"] {
        if res.get(key).and_then(Json::as_i64).is_some_and(|n| n != 0) {
            ctx.deny(
                "cpu_realtime",
                field(prefix, key),
                "real-time CPU scheduling is not allowed",
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
    fn runtime_isolation_annotations_and_oom_are_refused() {
        let p = Policy::default();
        for (hc, rule) in [
            (r#"{"Runtime":"kata"}"#, "runtime"),
            (r#"{"Runtime":"nvidia"}"#, "runtime"),
            (r#"{"Isolation":"hyperv"}"#, "isolation"),
            (
                r#"{"Annotations":{"run.oci.keep_original_groups":"1"}}"#,
                "annotations",
            ),
            (r#"{"OomScoreAdj":-1000}"#, "oom_score_adj"),
            (r#"{"OomKillDisable":true}"#, "oom_kill_disable"),
            (r#"{"CgroupParent":"/"}"#, "cgroup_parent"),
            (r#"{"CpuRealtimeRuntime":950000}"#, "cpu_realtime"),
            (
                r#"{"LogConfig":{"Type":"syslog","Config":{"syslog-address":"tcp://10.0.0.1:514"}}}"#,
                "log_driver",
            ),
            (r#"{"LogConfig":{"Type":"journald"}}"#, "log_driver"),
        ] {
            assert_eq!(
                refused(&p, &format!(r#"{{"Image":"x","HostConfig":{hc}}}"#)).rule,
                rule,
                "{hc}"
            );
        }
        create(&p, r#"{"Image":"x","HostConfig":{"Runtime":"runc","Isolation":"default","Annotations":{},"OomScoreAdj":500,"OomKillDisable":false,"CgroupParent":"","CpuRealtimeRuntime":0,"LogConfig":{"Type":"json-file","Config":{"max-file":"3"}}}}"#).unwrap();
    }

    #[test]
    fn update_cannot_move_cgroups_or_disable_oom() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/containers/c/update");
        assert_eq!(
            p.inspect_body(&r, br#"{"CgroupParent":"/"}"#)
                .unwrap_err()
                .rule,
            "cgroup_parent"
        );
        assert_eq!(
            p.inspect_body(&r, br#"{"OomKillDisable":true}"#)
                .unwrap_err()
                .rule,
            "oom_kill_disable"
        );
    }
}
