//! Build and image-create (pull/import) query parameters.
//!
//! `POST /build` (classic builder; moby `newImageBuildOptions`):
//! * `version=2` (BuildKit) gets these checks and those of [`super::buildkit`].
//! * `remote` (a URL or git repository the daemon fetches itself, from the host's
//!   network, running `git` on the host) is refused (rule `build_remote`);
//!   `client-session` (the context comes over the client's own BuildKit
//!   session) is fine.
//! * `networkmode` other than `default`/`bridge`/`none` (so `host` and
//!   `container:<x>`, which the RUN containers would join) is refused (rule
//!   `build_network_mode`).
//! * `cgroupparent` is refused (rule `cgroup_parent`); the listener's injected cgroup
//!   parent is set instead. `isolation` other than `default` is refused.
//! * `memory`, `memswap`, `cpuquota`/`cpuperiod`, `shmsize` and `ulimits` get the
//!   same caps as containers (`memswap` left at 0 becomes `memory`: no swap). moby reads them with `Int64ValueOrZero`, so an
//!   unparsable number is 0, i.e. unlimited, and is treated as such.
//! * `extrahosts`, `buildargs`, `labels`, `t`, `target`, `platform` are fine.
//!
//! `POST /images/create`: `fromSrc` other than empty or `-` (the body) makes the
//! daemon download an image tarball from a URL: refused (rule `image_import_url`).
//! `fromImage`, `repo`, `tag`, `platform`, `changes` (Dockerfile instructions that
//! only touch the image config) are fine.

use super::json::{self, Canon};
use super::limits::{Limit, OnExceed};
use super::query::Query;
use super::{schema, Ctx, Json, Refusal, UnknownFields};

fn int_or_zero(q: &Query, key: &str) -> Result<i64, Refusal> {
    Ok(q.get(key)?
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Caps one numeric build parameter; returns the value to set, if any.
fn cap(
    ctx: &mut Ctx<'_>,
    key: &str,
    rule: &'static str,
    v: i64,
    limit: &Limit,
    inject_absent: bool,
) -> Result<Option<i64>, Refusal> {
    if let Some(f) = limit.force {
        return Ok((v != f).then_some(f));
    }
    let Some(max) = limit.max else {
        return Ok(None);
    };
    if v == 0 {
        return Ok(inject_absent.then_some(max));
    }
    if v > 0 && v <= max {
        return Ok(None);
    }
    match limit.on_exceed {
        OnExceed::Refuse => {
            let shown = if v < 0 {
                "unlimited".to_string()
            } else {
                v.to_string()
            };
            ctx.deny(
                rule,
                key,
                format_args!("build {key} {shown} is over the cap of {max}"),
            )?;
            Ok(None)
        }
        OnExceed::Clamp => Ok(Some(max)),
    }
}

/// `POST /build`: checks, and the rewritten query when cistern changed it.
pub fn build_query(ctx: &mut Ctx<'_>, q: &Query) -> Result<Option<String>, Refusal> {
    if super::buildkit::is_buildkit(q)? {
        super::buildkit::build_query(ctx, q)?;
    }
    if q.get("remote")?
        .is_some_and(|v| !v.is_empty() && v != "client-session")
    {
        ctx.deny(
            "build_remote",
            "remote",
            "remote build contexts fetched by the daemon are not allowed",
        )?;
    }
    if let Some(nm) = q.get("networkmode")? {
        if !["", "default", "bridge", "none"].contains(&nm) {
            ctx.deny(
                "build_network_mode",
                "networkmode",
                format_args!("build network mode {nm:?} is not allowed"),
            )?;
        }
    }
    let injected = ctx.policy.inject.cgroup_parent.clone();
    if q.get("cgroupparent")?
        .is_some_and(|v| !v.is_empty() && Some(v) != injected.as_deref())
    {
        ctx.deny(
            "cgroup_parent",
            "cgroupparent",
            "choosing the cgroup parent is not allowed",
        )?;
    }
    if let Some(i) = q.get("isolation")? {
        if !["", "default"].contains(&i) {
            ctx.deny(
                "isolation",
                "isolation",
                format_args!("isolation {i:?} is not allowed"),
            )?;
        }
    }
    let limits = ctx.policy.limits.clone();
    let mut out = q.clone();
    let mut changed = false;
    let mut memory = int_or_zero(q, "memory")?;
    for (key, rule, limit, inject) in [
        ("memory", "limit_memory", &limits.memory, true),
        ("memswap", "limit_memory_swap", &limits.memory_swap, true),
        ("shmsize", "limit_shm_size", &limits.shm_size, false),
    ] {
        if let Some(l) = limit {
            let asked = int_or_zero(q, key)?;
            let set = if key == "memswap" && asked == 0 && l.force.is_none() {
                // No swap unless asked for, as for containers (see `limits`).
                (memory > 0).then(|| memory.min(l.ceiling()))
            } else {
                cap(ctx, key, rule, asked, l, inject)?
            };
            if let Some(v) = set {
                if key == "memory" {
                    memory = v;
                }
                out = out.with(key, &v.to_string());
                ctx.notes.push(format!("build {key} set to {v}"));
                changed = true;
            }
        }
    }
    if let Some(l) = &limits.nano_cpus {
        let period = match int_or_zero(q, "cpuperiod")? {
            p if p > 0 => i128::from(p),
            _ => 100_000,
        };
        let quota = int_or_zero(q, "cpuquota")?;
        let nano = if quota > 0 {
            (i128::from(quota) * 1_000_000_000 / period)
                .try_into()
                .unwrap_or(i64::MAX)
        } else {
            0
        };
        if let Some(n) = cap(ctx, "cpuquota", "limit_cpus", nano, l, true)? {
            let quota = (i128::from(n) * period / 1_000_000_000).max(1_000);
            out = out.with("cpuquota", &quota.to_string());
            ctx.notes.push(format!("build cpuquota set to {quota}"));
            changed = true;
        }
    }
    if let Some(raw) = q.get("ulimits")?.filter(|u| !u.is_empty()) {
        let wrapped = format!("{{\"Ulimits\":{raw}}}");
        let v = json::parse(wrapped.as_bytes())?;
        let mut c = json::canonicalise(
            v,
            &schema::BUILD_ULIMITS,
            Canon {
                unknown: UnknownFields::Refuse,
            },
            &mut ctx.notes,
        )?;
        let update = std::mem::replace(&mut ctx.update, false);
        let r = super::limits::resources(ctx, &mut c, "ulimits");
        ctx.update = update;
        r?;
        // Always forward the canonical form, so that the daemon reads what was checked.
        let list = c.get("Ulimits").cloned().unwrap_or(Json::Array(Vec::new()));
        out = out.with("ulimits", &String::from_utf8_lossy(&list.to_vec()));
        changed = true;
    }
    if let Some(cg) = &ctx.policy.inject.cgroup_parent {
        out = out.with("cgroupparent", cg);
        changed = true;
    }
    Ok(changed.then(|| out.encode()))
}

/// `POST /images/create`.
pub fn image_create_query(ctx: &mut Ctx<'_>, q: &Query) -> Result<(), Refusal> {
    if let Some(src) = q.get("fromSrc")? {
        if !(src.is_empty() || src == "-") {
            ctx.deny(
                "image_import_url",
                "fromSrc",
                "importing an image from a URL is not allowed",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;

    fn build(p: &Policy, query: &str) -> Result<Option<String>, super::Refusal> {
        p.inspect_query(&route("POST", &format!("/v1.41/build?{query}")))
    }

    #[test]
    fn dangerous_build_parameters_are_refused() {
        let p = policy_yaml("limits: none"); // queries compared whole
        for (q, rule) in [
            ("networkmode=host", "build_network_mode"),
            ("networkmode=container:web", "build_network_mode"),
            ("networkmode=host&networkmode=default", "query"),
            ("remote=https://example.invalid/ctx.tar", "build_remote"),
            ("remote=git@host:repo.git", "build_remote"),
            ("cgroupparent=/", "cgroup_parent"),
            ("isolation=hyperv", "isolation"),
            ("t=x;networkmode=host", "query"),
        ] {
            assert_eq!(build(&p, q).unwrap_err().rule, rule, "{q}");
        }
        for q in ["t=app:1&extrahosts=a:1.2.3.4&buildargs=%7B%22A%22%3A%221%22%7D&networkmode=default&version=1", "networkmode=none", "", "remote=client-session&session=s"] {
            assert_eq!(build(&p, q).unwrap(), None, "{q}");
        }
    }

    #[test]
    fn build_limits_are_capped_and_injected() {
        let p = policy_yaml("limits: {memory: {max: 1GiB}, cpus: {max: 1, on_exceed: clamp}, shm_size: {max: 64MiB}, ulimits: {nofile: {max: 1024, on_exceed: clamp}}}\ninject: {cgroup_parent: /ci}");
        let q = build(&p, "t=a").unwrap().unwrap();
        assert_eq!(
            q,
            "t=a&memory=1073741824&memswap=1073741824&cpuquota=100000&cgroupparent=%2Fci"
        );
        assert_eq!(
            build(&p, "memory=2147483648").unwrap_err().rule,
            "limit_memory"
        );
        assert_eq!(build(&p, "memory=-1").unwrap_err().rule, "limit_memory");
        assert_eq!(
            build(&p, "shmsize=1073741824").unwrap_err().rule,
            "limit_shm_size"
        );
        let q = build(&p, "memory=1024&cpuquota=400000&ulimits=%5B%7B%22name%22%3A%22nofile%22%2C%22Hard%22%3A-1%2C%22Soft%22%3A-1%7D%5D").unwrap().unwrap();
        assert!(q.contains("cpuquota=100000"), "{q}");
        assert!(q.contains("ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22Hard%22%3A1024%2C%22Soft%22%3A1024%7D%5D"), "{q}");
        assert_eq!(
            build(&p, "ulimits=%5B%7B%22Name%22%3A1%7D%5D")
                .unwrap_err()
                .rule,
            "json_type"
        );
    }

    #[test]
    fn image_import_from_url_is_refused() {
        let p = Policy::default();
        let q = |s: &str| p.inspect_query(&route("POST", &format!("/v1.41/images/create?{s}")));
        assert_eq!(
            q("fromSrc=http%3A%2F%2F169.254.169.254%2F")
                .unwrap_err()
                .rule,
            "image_import_url"
        );
        assert_eq!(q("fromImage=busybox&tag=latest").unwrap(), None);
        assert_eq!(q("fromSrc=-&repo=x").unwrap(), None);
    }
}
