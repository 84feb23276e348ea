//! Resource limits: memory, memory+swap, CPUs, PIDs, ulimits, `/dev/shm` size and
//! the json-file/local log size, each capped (`max`) or forced (`force`).
//!
//! **Defaults.** A policy that does not say otherwise (the built-in
//! `conservative` one included) caps memory at half the host's RAM
//! ([`default_memory`]: at least 1 GiB, at most 64 GiB), memory+swap at the
//! memory cap, and PIDs at [`DEFAULT_PIDS`], so that one job can neither
//! fork-bomb the host nor use all of its memory; CPUs, shm size, ulimits and log
//! size are left unlimited. The config lifts each (`null`/`none`) or all
//! (`limits: none`); see [`config`](super::config).
//!
//! The daemon reads "unlimited" in several spellings, and each counts as over the
//! cap: `Memory: 0`, `MemorySwap: -1`, `PidsLimit: -1` (and `0` on update; on
//! create the docker CLI sends `0` by default, which gets the cap), `NanoCpus: 0`
//! with no `CpuQuota` (or `CpuQuota: -1`), a ulimit of `-1`, a json-file log
//! without `max-size`. On container create an absent (or unlimited-by-default)
//! value is set to the cap, since absent means unlimited to the daemon; `ShmSize`
//! absent keeps the daemon's 64 MiB default. An absent `MemorySwap` is set to the
//! container's `Memory` instead (no swap): the daemon would otherwise allow as
//! much swap again as memory; a client that wants swap asks for a `MemorySwap`
//! within the cap. On container update an absent value means "unchanged"
//! and is left alone, but an explicit value is checked the same way.
//!
//! Explicit "unlimited" is over every cap, so with the default
//! `on_exceed: refuse` it is refused with 403 naming the rule (`limit_pids`,
//! `limit_memory_swap`...); with `clamp` it gets the cap. The zeros the docker
//! CLI sends on every create (`--memory 0`, `--pids-limit 0`, `--memory-swap 0`
//! are the same bytes) cannot be told from "nothing asked" and get the cap.
//!
//! CPUs may be given as `NanoCpus` or as `CpuQuota`/`CpuPeriod` (CPUs = quota /
//! period, period defaulting to 100 ms); the daemon refuses both at once, so
//! cistern sets whichever form the client used. Over a cap: `on_exceed: refuse`
//! names the cap, `clamp` lowers the value and notes it. `force` always wins.
//!
//! The log cap assumes the daemon's default log driver is `json-file` or `local`
//! when the client leaves `LogConfig.Type` empty.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::host::Host;
use super::{Ctx, Json, Refusal};

/// What to do with a value over `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    Refuse,
    Clamp,
}

/// One limit, in the daemon's unit (bytes, nano-CPUs, count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub max: Option<i64>,
    pub force: Option<i64>,
    pub on_exceed: OnExceed,
}

/// The PIDs cap when the config does not set one: enough for parallel builds
/// and test runners, far below the kernel's default `pid_max`.
pub const DEFAULT_PIDS: i64 = 4096;
/// The smallest memory cap sized from the host.
pub const DEFAULT_MEMORY_FLOOR: i64 = 1 << 30;
/// The largest memory cap sized from the host.
pub const DEFAULT_MEMORY_CEILING: i64 = 64 << 30;

/// The memory cap when the config does not set one: half the host's RAM, at
/// least [`DEFAULT_MEMORY_FLOOR`] and at most [`DEFAULT_MEMORY_CEILING`]; the
/// floor when the host's RAM cannot be read.
pub fn default_memory(host: Host) -> i64 {
    host.memory
        .map_or(DEFAULT_MEMORY_FLOOR, |ram| {
            i64::try_from(ram / 2).unwrap_or(i64::MAX)
        })
        .clamp(DEFAULT_MEMORY_FLOOR, DEFAULT_MEMORY_CEILING)
}

impl Limit {
    /// A cap of `max`, refused above.
    pub fn cap(max: i64) -> Limit {
        Limit {
            max: Some(max),
            force: None,
            on_exceed: OnExceed::Refuse,
        }
    }

    /// The highest value this limit lets through.
    pub fn ceiling(&self) -> i64 {
        self.max.or(self.force).unwrap_or(i64::MAX)
    }
}

/// All limits of a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<Limit>,
    pub memory_swap: Option<Limit>,
    pub nano_cpus: Option<Limit>,
    pub pids: Option<Limit>,
    pub shm_size: Option<Limit>,
    pub log_max_size: Option<Limit>,
    /// By ulimit name (`nofile`, `nproc`...): caps on soft and hard.
    pub ulimits: BTreeMap<String, Limit>,
}

/// How a cap reads in the startup log: the highest value let through, or
/// `unlimited`.
pub fn cap_text(limit: &Option<Limit>) -> String {
    limit
        .as_ref()
        .map_or_else(|| "unlimited".into(), |l| l.ceiling().to_string())
}

/// A value as the daemon will read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Absent,
    Unlimited,
    Set(i64),
}

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

struct Scalar<'a> {
    key: &'a str,
    field: String,
    rule: &'static str,
    what: &'static str,
    /// Set the cap when the client gave nothing.
    inject_absent: bool,
}

fn describe(v: Val) -> String {
    match v {
        Val::Set(n) => n.to_string(),
        _ => "unlimited".into(),
    }
}

fn enforce(
    ctx: &mut Ctx<'_>,
    obj: &mut Json,
    s: Scalar<'_>,
    limit: &Limit,
    val: Val,
) -> Result<(), Refusal> {
    if ctx.update && val == Val::Absent {
        return Ok(());
    }
    if let Some(f) = limit.force {
        if val != Val::Set(f) {
            obj.set(s.key, Json::int(f));
            ctx.notes.push(format!("{} forced to {f}", s.field));
        }
        return Ok(());
    }
    let Some(max) = limit.max else { return Ok(()) };
    match val {
        Val::Absent if s.inject_absent => {
            obj.set(s.key, Json::int(max));
            ctx.notes.push(format!("{} set to the cap {max}", s.field));
        }
        Val::Absent => {}
        Val::Set(n) if n <= max => {}
        over => match limit.on_exceed {
            OnExceed::Refuse => ctx.deny(
                s.rule,
                s.field,
                format_args!("{} {} is over the cap of {max}", s.what, describe(over)),
            )?,
            OnExceed::Clamp => {
                obj.set(s.key, Json::int(max));
                ctx.notes.push(format!(
                    "{} clamped from {} to {max}",
                    s.field,
                    describe(over)
                ));
            }
        },
    }
    Ok(())
}

fn int(obj: &Json, key: &str) -> Option<i64> {
    obj.get(key).and_then(Json::as_i64)
}

/// Memory, swap, CPUs, PIDs and ulimits of a `Resources` object.
pub fn resources(ctx: &mut Ctx<'_>, res: &mut Json, prefix: &str) -> Result<(), Refusal> {
    let limits = ctx.policy.limits.clone();
    if let Some(l) = &limits.memory {
        let val = match int(res, "Memory") {
            None | Some(0) => Val::Absent,
            Some(n) if n < 0 => Val::Unlimited,
            Some(n) => Val::Set(n),
        };
        let s = Scalar {
            key: "Memory",
            field: field(prefix, "Memory"),
            rule: "limit_memory",
            what: "memory",
            inject_absent: true,
        };
        enforce(ctx, res, s, l, val)?;
    }
    if let Some(l) = &limits.memory_swap {
        let val = match int(res, "MemorySwap") {
            None | Some(0) => Val::Absent,
            Some(n) if n < 0 => Val::Unlimited,
            Some(n) => Val::Set(n),
        };
        let memory = int(res, "Memory").filter(|m| *m > 0);
        match (val, memory) {
            // No swap unless asked for: memory+swap is the memory limit (which
            // the memory cap keeps within this one; the daemon refuses a
            // swap limit without a memory limit, so none is set then).
            (Val::Absent, Some(m)) if !ctx.update && l.force.is_none() => {
                let m = m.min(l.ceiling());
                res.set("MemorySwap", Json::int(m));
                ctx.notes.push(format!(
                    "{} set to the memory limit {m} (no swap)",
                    field(prefix, "MemorySwap")
                ));
            }
            (Val::Absent, None) if !ctx.update && l.force.is_none() => {}
            _ => {
                let s = Scalar {
                    key: "MemorySwap",
                    field: field(prefix, "MemorySwap"),
                    rule: "limit_memory_swap",
                    what: "memory+swap",
                    inject_absent: true,
                };
                enforce(ctx, res, s, l, val)?;
            }
        }
    }
    if let Some(l) = &limits.nano_cpus {
        cpus(ctx, res, prefix, l)?;
    }
    if let Some(l) = &limits.pids {
        let val = match int(res, "PidsLimit") {
            None => Val::Absent,
            // The docker CLI sends `PidsLimit: 0` on every create that does not
            // say `--pids-limit`: there it is the default, set to the cap like an
            // absent value. On update the CLI sends it only when asked, so an
            // explicit 0 is a request for "unlimited".
            Some(0) if !ctx.update => Val::Absent,
            Some(n) if n <= 0 => Val::Unlimited,
            Some(n) => Val::Set(n),
        };
        let s = Scalar {
            key: "PidsLimit",
            field: field(prefix, "PidsLimit"),
            rule: "limit_pids",
            what: "PIDs limit",
            inject_absent: true,
        };
        enforce(ctx, res, s, l, val)?;
    }
    for (name, l) in &limits.ulimits {
        ulimit(ctx, res, prefix, name, l)?;
    }
    Ok(())
}

const DEFAULT_CPU_PERIOD: i128 = 100_000;

fn cpus(ctx: &mut Ctx<'_>, res: &mut Json, prefix: &str, l: &Limit) -> Result<(), Refusal> {
    let nano = int(res, "NanoCpus").filter(|n| *n > 0);
    let quota = int(res, "CpuQuota").filter(|n| *n > 0);
    let explicit_period = int(res, "CpuPeriod").filter(|n| *n > 0);
    let period = explicit_period.map_or(DEFAULT_CPU_PERIOD, i128::from);
    let from_quota = |q: i64| -> i64 {
        (i128::from(q) * 1_000_000_000 / period)
            .try_into()
            .unwrap_or(i64::MAX)
    };
    let quota_for = |n: i64| -> i64 {
        (i128::from(n) * period / 1_000_000_000)
            .max(1_000)
            .try_into()
            .unwrap_or(i64::MAX)
    };
    let effective = nano.or(quota.map(from_quota));
    let nano_field = field(prefix, "NanoCpus");
    if ctx.update && effective.is_none() {
        return Ok(());
    }
    if let Some(f) = l.force {
        if effective != Some(f) {
            res.remove("CpuQuota");
            res.remove("CpuPeriod");
            res.set("NanoCpus", Json::int(f));
            ctx.notes.push(format!("{nano_field} forced to {f}"));
        }
        return Ok(());
    }
    let Some(max) = l.max else { return Ok(()) };
    let set = |res: &mut Json, n: i64| {
        if nano.is_some() || (quota.is_none() && explicit_period.is_none()) {
            res.set("NanoCpus", Json::int(n));
        } else {
            res.set("CpuQuota", Json::int(quota_for(n)));
        }
    };
    match effective {
        None => {
            set(res, max);
            ctx.notes.push(format!("{nano_field} set to the cap {max}"));
        }
        Some(e) if e <= max => {}
        Some(e) => match l.on_exceed {
            OnExceed::Refuse => {
                let f = if nano.is_some() {
                    nano_field
                } else {
                    field(prefix, "CpuQuota")
                };
                ctx.deny(
                    "limit_cpus",
                    f,
                    format_args!(
                        "{:.3} CPUs is over the cap of {:.3}",
                        e as f64 / 1e9,
                        max as f64 / 1e9
                    ),
                )?;
            }
            OnExceed::Clamp => {
                set(res, max);
                ctx.notes
                    .push(format!("{nano_field} clamped from {e} to {max}"));
            }
        },
    }
    Ok(())
}

fn ulimit(
    ctx: &mut Ctx<'_>,
    res: &mut Json,
    prefix: &str,
    name: &str,
    l: &Limit,
) -> Result<(), Refusal> {
    let f = format!("{}.{name}", field(prefix, "Ulimits"));
    let mut found = false;
    let mut over: Option<String> = None;
    if let Some(Json::Array(list)) = res.get_mut("Ulimits") {
        for u in list.iter_mut() {
            if u.get("Name").and_then(Json::as_str) != Some(name) {
                continue;
            }
            found = true;
            for key in ["Soft", "Hard"] {
                let v = u.get(key).and_then(Json::as_i64).unwrap_or(0);
                let target = match (l.force, l.max) {
                    (Some(force), _) => Some(force).filter(|f| *f != v),
                    (None, Some(max)) if v < 0 || v > max => match l.on_exceed {
                        OnExceed::Refuse => {
                            over = Some(format!(
                                "ulimit {name} {key} {} is over the cap of {max}",
                                describe(if v < 0 { Val::Unlimited } else { Val::Set(v) })
                            ));
                            None
                        }
                        OnExceed::Clamp => Some(max),
                    },
                    _ => None,
                };
                if let Some(t) = target {
                    u.set(key, Json::int(t));
                    ctx.notes.push(format!("{f}.{key} set to {t}"));
                }
            }
        }
    }
    if let Some(msg) = over {
        ctx.deny("limit_ulimit", f.clone(), msg)?;
    }
    if !found && !ctx.update {
        if let Some(v) = l.force.or(l.max) {
            let entry = Json::Object(vec![
                ("Name".into(), Json::string(name)),
                ("Hard".into(), Json::int(v)),
                ("Soft".into(), Json::int(v)),
            ]);
            match res.get_mut("Ulimits") {
                Some(Json::Array(list)) => list.push(entry),
                _ => res.set("Ulimits", Json::Array(vec![entry])),
            }
            ctx.notes.push(format!("{f} set to {v}"));
        }
    }
    Ok(())
}

/// Docker's `units.RAMInBytes`: `10m`, `1.5GiB`, `512k`, `100` (binary multiples).
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut u = unit.as_str();
    let exp = match u.chars().next() {
        Some(c @ ('k' | 'm' | 'g' | 't' | 'p')) => {
            u = &u[1..];
            "kmgtp".find(c).map_or(0, |i| i + 1)
        }
        _ => 0,
    };
    let u = u.strip_prefix('i').unwrap_or(u);
    let u = u.strip_prefix('b').unwrap_or(u);
    if !u.is_empty() || num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let v: f64 = num.parse().ok()?;
    let bytes = v * 1024f64.powi(exp as i32);
    (bytes.is_finite() && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// Everything on a create `HostConfig`: the `Resources` limits, `ShmSize`, log size.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &mut Json) -> Result<(), Refusal> {
    resources(ctx, hc, "HostConfig")?;
    let limits = ctx.policy.limits.clone();
    if let Some(l) = &limits.shm_size {
        let val = match int(hc, "ShmSize") {
            None | Some(0) => Val::Absent,
            Some(n) if n < 0 => Val::Unlimited,
            Some(n) => Val::Set(n),
        };
        let s = Scalar {
            key: "ShmSize",
            field: "HostConfig.ShmSize".into(),
            rule: "limit_shm_size",
            what: "shm size",
            inject_absent: false,
        };
        enforce(ctx, hc, s, l, val)?;
    }
    if let Some(l) = &limits.log_max_size {
        let ty = hc
            .at(&["LogConfig", "Type"])
            .and_then(Json::as_str)
            .unwrap_or("");
        if ["", "json-file", "local"].contains(&ty) {
            let lc = hc.object_mut("LogConfig");
            let config = lc.object_mut("Config");
            let val = match config.get("max-size").and_then(Json::as_str) {
                None => Val::Absent,
                Some(v) => match ram_in_bytes(v) {
                    Some(n) if n > 0 => Val::Set(n),
                    _ => Val::Unlimited,
                },
            };
            let want = match (l.force, l.max, val) {
                (Some(f), _, v) if v != Val::Set(f) => Some(f),
                (None, Some(max), Val::Absent) => Some(max),
                (None, Some(max), v) if !matches!(v, Val::Set(n) if n <= max) => {
                    match l.on_exceed {
                        OnExceed::Refuse => {
                            ctx.deny(
                                "limit_log_max_size",
                                "HostConfig.LogConfig.Config.max-size",
                                format_args!(
                                    "log max-size {} is over the cap of {max}",
                                    describe(v)
                                ),
                            )?;
                            None
                        }
                        OnExceed::Clamp => Some(max),
                    }
                }
                _ => None,
            };
            if let Some(n) = want {
                config.set("max-size", Json::string(n.to_string()));
                ctx.notes
                    .push(format!("HostConfig.LogConfig.Config.max-size set to {n}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const CAPS: &str = "limits: {memory: {max: 1GiB}, memory_swap: {max: 2GiB}, cpus: {max: 2}, pids: {max: 100}, shm_size: {max: 128MiB}, log_max_size: {max: 10MiB}, ulimits: {nofile: {max: 4096}}}";

    fn hc(v: &Json) -> &Json {
        v.get("HostConfig").unwrap()
    }

    #[test]
    fn absent_limits_are_set_to_the_cap() {
        let p = policy_yaml(CAPS);
        let v = create(&p, r#"{"Image":"x"}"#).unwrap();
        let h = hc(&v);
        assert_eq!(int(h, "Memory"), Some(1 << 30));
        // Swap is not given unless asked for: memory+swap is the memory limit.
        assert_eq!(int(h, "MemorySwap"), Some(1 << 30));
        assert_eq!(int(h, "NanoCpus"), Some(2_000_000_000));
        assert_eq!(int(h, "PidsLimit"), Some(100));
        assert_eq!(h.get("ShmSize"), None);
        assert_eq!(
            h.at(&["LogConfig", "Config", "max-size"])
                .and_then(Json::as_str),
            Some("10485760")
        );
        assert_eq!(
            h.get("Ulimits").unwrap().as_array().unwrap()[0]
                .get("Hard")
                .and_then(Json::as_i64),
            Some(4096)
        );
        // docker-py's explicit zeros mean unlimited: also set to the cap.
        let v = create(
            &p,
            r#"{"Image":"x","HostConfig":{"Memory":0,"NanoCpus":0,"PidsLimit":null,"ShmSize":0}}"#,
        )
        .unwrap();
        assert_eq!(int(hc(&v), "Memory"), Some(1 << 30));
    }

    /// The docker CLI sends `PidsLimit: 0` (and zeros elsewhere) on every create
    /// without `--pids-limit`: a plain `docker run` must get the cap, not a refusal.
    #[test]
    fn docker_cli_default_pids_limit_zero_gets_the_cap() {
        let p = policy_yaml(CAPS);
        let v = create(
            &p,
            r#"{"Image":"x","HostConfig":{"Memory":0,"MemorySwap":0,"NanoCpus":0,"CpuQuota":0,"CpuPeriod":0,"PidsLimit":0,"Ulimits":[],"ShmSize":0,"LogConfig":{"Type":"","Config":{}}}}"#,
        )
        .unwrap();
        assert_eq!(int(hc(&v), "PidsLimit"), Some(100));
        // An explicit "unlimited" is still over the cap.
        assert_eq!(
            refused(&p, r#"{"Image":"x","HostConfig":{"PidsLimit":-1}}"#).rule,
            "limit_pids"
        );
    }

    #[test]
    fn values_within_the_cap_pass_unchanged() {
        let p = policy_yaml(CAPS);
        let v = create(&p, r#"{"Image":"x","HostConfig":{"Memory":536870912,"MemorySwap":1073741824,"NanoCpus":500000000,"PidsLimit":50,"ShmSize":67108864,"Ulimits":[{"Name":"nofile","Soft":1024,"Hard":2048}],"LogConfig":{"Type":"json-file","Config":{"max-size":"5m"}}}}"#).unwrap();
        let h = hc(&v);
        assert_eq!(int(h, "Memory"), Some(536870912));
        assert_eq!(int(h, "NanoCpus"), Some(500000000));
        assert_eq!(
            h.at(&["LogConfig", "Config", "max-size"])
                .and_then(Json::as_str),
            Some("5m")
        );
        // CpuQuota/CpuPeriod form: 1.5 CPUs.
        let v = create(
            &p,
            r#"{"Image":"x","HostConfig":{"CpuQuota":150000,"CpuPeriod":100000}}"#,
        )
        .unwrap();
        assert_eq!(hc(&v).get("NanoCpus"), None);
    }

    #[test]
    fn over_the_cap_is_refused_naming_the_cap() {
        let p = policy_yaml(CAPS);
        for (h, rule) in [
            (r#"{"Memory":2147483648}"#, "limit_memory"),
            (r#"{"MemorySwap":-1}"#, "limit_memory_swap"),
            (r#"{"NanoCpus":4000000000}"#, "limit_cpus"),
            (r#"{"CpuQuota":400000}"#, "limit_cpus"),
            (r#"{"CpuQuota":50000,"CpuPeriod":10000}"#, "limit_cpus"),
            (r#"{"PidsLimit":-1}"#, "limit_pids"),
            (r#"{"PidsLimit":101}"#, "limit_pids"),
            (r#"{"ShmSize":1073741824}"#, "limit_shm_size"),
            (
                r#"{"Ulimits":[{"Name":"nofile","Soft":1024,"Hard":-1}]}"#,
                "limit_ulimit",
            ),
            (
                r#"{"LogConfig":{"Type":"json-file","Config":{"max-size":"1g"}}}"#,
                "limit_log_max_size",
            ),
            (
                r#"{"LogConfig":{"Config":{"max-size":"-1"}}}"#,
                "limit_log_max_size",
            ),
        ] {
            let r = refused(&p, &format!(r#"{{"Image":"x","HostConfig":{h}}}"#));
            assert_eq!(r.rule, rule, "{h}");
            assert!(r.message.contains("over the cap"), "{}", r.message);
        }
        let r = refused(&p, r#"{"Image":"x","HostConfig":{"Memory":2147483648}}"#);
        assert_eq!(r.message, "cistern: memory 2147483648 is over the cap of 1073741824 (policy conservative, HostConfig.Memory)");
    }

    #[test]
    fn clamp_lowers_and_force_wins() {
        let p = policy_yaml("limits: {memory: {max: 1GiB, on_exceed: clamp}, cpus: {max: 1, on_exceed: clamp}, pids: {force: 64}, ulimits: {nproc: {max: 512, on_exceed: clamp}}}");
        let v = create(&p, r#"{"Image":"x","HostConfig":{"Memory":4294967296,"CpuQuota":400000,"CpuPeriod":100000,"PidsLimit":10,"Ulimits":[{"Name":"nproc","Soft":-1,"Hard":-1}]}}"#).unwrap();
        let h = hc(&v);
        assert_eq!(int(h, "Memory"), Some(1 << 30));
        assert_eq!(int(h, "CpuQuota"), Some(100000));
        assert_eq!(h.get("NanoCpus"), None);
        assert_eq!(int(h, "PidsLimit"), Some(64));
        let u = &h.get("Ulimits").unwrap().as_array().unwrap()[0];
        assert_eq!((int(u, "Soft"), int(u, "Hard")), (Some(512), Some(512)));
        let i = p
            .inspect_body(
                &route("POST", "/v1.41/containers/create"),
                br#"{"Image":"x","HostConfig":{"Memory":4294967296}}"#,
            )
            .unwrap();
        assert!(
            i.notes
                .iter()
                .any(|n| n.contains("HostConfig.Memory clamped")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn update_checks_explicit_values_only() {
        let p = policy_yaml(CAPS);
        let r = route("POST", "/v1.41/containers/c/update");
        let i = p
            .inspect_body(&r, br#"{"RestartPolicy":{"Name":"no"}}"#)
            .unwrap();
        assert_eq!(
            &i.body.to_bytes()[..],
            br#"{"RestartPolicy":{"Name":"no"}}"#
        );
        assert_eq!(
            p.inspect_body(&r, br#"{"Memory":4294967296}"#)
                .unwrap_err()
                .rule,
            "limit_memory"
        );
        assert_eq!(
            p.inspect_body(&r, br#"{"PidsLimit":0}"#).unwrap_err().field,
            "PidsLimit"
        );
        assert_eq!(
            p.inspect_body(&r, br#"{"MemorySwap":-1}"#)
                .unwrap_err()
                .rule,
            "limit_memory_swap"
        );
        p.inspect_body(&r, br#"{"Memory":536870912,"NanoCpus":1000000000}"#)
            .unwrap();
    }

    const GIB: i64 = 1 << 30;

    /// A policy validated on a host with `ram` bytes of RAM.
    fn on_host(yaml: &str, ram: u64) -> crate::policy::Policy {
        let c: crate::policy::PolicyConfig = serde_yaml::from_str(yaml).unwrap();
        c.validate_on(Host { memory: Some(ram) }).unwrap()
    }

    /// What the docker CLI 20.10 sends for `docker run busybox true`.
    const CLI_RUN: &str = r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"Binds":null,"LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","RestartPolicy":{"Name":"no","MaximumRetryCount":0},"ShmSize":0,"CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","CpuPeriod":0,"CpuQuota":0,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":null}}"#;

    fn with_host_config(fields: &str) -> String {
        format!(r#"{{"Image":"busybox","HostConfig":{{{fields}}}}}"#)
    }

    #[test]
    fn the_default_policy_caps_pids_memory_and_swap_on_a_plain_run() {
        let p = on_host("{}", 16 << 30);
        let v = create(&p, CLI_RUN).unwrap();
        let h = hc(&v);
        assert_eq!(int(h, "PidsLimit"), Some(DEFAULT_PIDS));
        assert_eq!(int(h, "Memory"), Some(8 * GIB));
        assert_eq!(int(h, "MemorySwap"), Some(8 * GIB));
        // CPUs, shm size, ulimits and log size stay the client's.
        assert_eq!(int(h, "NanoCpus"), Some(0));
        assert_eq!(int(h, "ShmSize"), Some(0));
        assert_eq!(h.get("Ulimits"), None);
        assert_eq!(h.at(&["LogConfig", "Config"]), Some(&Json::Object(vec![])));
        // No HostConfig at all (docker-py's low-level API, curl).
        let v = create(&p, r#"{"Image":"busybox"}"#).unwrap();
        assert_eq!(
            (
                int(hc(&v), "Memory"),
                int(hc(&v), "MemorySwap"),
                int(hc(&v), "PidsLimit")
            ),
            (Some(8 * GIB), Some(8 * GIB), Some(4096))
        );
        let i = p
            .inspect_body(
                &route("POST", "/v1.41/containers/create"),
                CLI_RUN.as_bytes(),
            )
            .unwrap();
        assert_eq!(
            i.notes,
            [
                "HostConfig.Memory set to the cap 8589934592",
                "HostConfig.MemorySwap set to the memory limit 8589934592 (no swap)",
                "HostConfig.PidsLimit set to the cap 4096"
            ]
        );
    }

    #[test]
    fn the_default_memory_cap_is_half_the_host_between_a_floor_and_a_ceiling() {
        for (ram, cap) in [
            (Some(16 << 30), 8 * GIB),
            (Some(1 << 30), GIB),
            (Some(3 << 30), 3 * GIB / 2),
            (Some(512 << 30), 64 * GIB),
            (None, GIB),
        ] {
            assert_eq!(default_memory(Host { memory: ram }), cap, "{ram:?}");
        }
    }

    #[test]
    fn a_client_may_ask_for_less_and_for_swap_within_the_cap() {
        let p = on_host("{}", 16 << 30);
        for (fields, memory, swap, pids) in [
            // Less memory: no swap unless asked for.
            (r#""Memory":268435456"#, 268435456, 268435456, 4096),
            (
                r#""Memory":268435456,"MemorySwap":536870912,"PidsLimit":64"#,
                268435456,
                536870912,
                64,
            ),
            (
                r#""Memory":8589934592,"MemorySwap":8589934592,"PidsLimit":4096"#,
                8 * GIB,
                8 * GIB,
                4096,
            ),
        ] {
            let v = create(&p, &with_host_config(fields)).unwrap();
            let h = hc(&v);
            assert_eq!(
                (int(h, "Memory"), int(h, "MemorySwap"), int(h, "PidsLimit")),
                (Some(memory), Some(swap), Some(pids)),
                "{fields}"
            );
        }
    }

    #[test]
    fn the_default_policy_refuses_unlimited_and_over_the_cap_naming_the_rule() {
        let p = on_host("{}", 16 << 30);
        for (fields, rule, message) in [
            (r#""PidsLimit":-1"#, "limit_pids", "cistern: PIDs limit unlimited is over the cap of 4096 (policy conservative, HostConfig.PidsLimit)"),
            (r#""PidsLimit":4097"#, "limit_pids", "cistern: PIDs limit 4097 is over the cap of 4096 (policy conservative, HostConfig.PidsLimit)"),
            (r#""MemorySwap":-1"#, "limit_memory_swap", "cistern: memory+swap unlimited is over the cap of 8589934592 (policy conservative, HostConfig.MemorySwap)"),
            (r#""Memory":268435456,"MemorySwap":-1"#, "limit_memory_swap", "cistern: memory+swap unlimited is over the cap of 8589934592 (policy conservative, HostConfig.MemorySwap)"),
            (r#""Memory":268435456,"MemorySwap":17179869184"#, "limit_memory_swap", "cistern: memory+swap 17179869184 is over the cap of 8589934592 (policy conservative, HostConfig.MemorySwap)"),
            (r#""Memory":-1"#, "limit_memory", "cistern: memory unlimited is over the cap of 8589934592 (policy conservative, HostConfig.Memory)"),
            (r#""Memory":17179869184"#, "limit_memory", "cistern: memory 17179869184 is over the cap of 8589934592 (policy conservative, HostConfig.Memory)"),
        ] {
            let r = refused(&p, &with_host_config(fields));
            assert_eq!((r.rule, r.message.as_str()), (rule, message), "{fields}");
            assert_eq!(r.status, http::StatusCode::FORBIDDEN);
            assert_eq!(r.json_body(), serde_json::json!({ "message": message }).to_string());
        }
    }

    #[test]
    fn the_default_policy_refuses_an_update_to_unlimited_or_over_the_cap() {
        let p = on_host("{}", 16 << 30);
        let r = route("POST", "/v1.41/containers/c/update");
        for (body, rule) in [
            (r#"{"PidsLimit":-1}"#, "limit_pids"),
            // On update the CLI sends PidsLimit only when asked: 0 is unlimited.
            (r#"{"PidsLimit":0}"#, "limit_pids"),
            (r#"{"PidsLimit":100000}"#, "limit_pids"),
            (r#"{"Memory":0,"MemorySwap":-1}"#, "limit_memory_swap"),
            (
                r#"{"Memory":17179869184,"MemorySwap":17179869184}"#,
                "limit_memory",
            ),
            (r#"{"Memory":-1}"#, "limit_memory"),
        ] {
            assert_eq!(
                p.inspect_body(&r, body.as_bytes()).unwrap_err().rule,
                rule,
                "{body}"
            );
        }
        // What the docker CLI sends for `docker update --pids-limit 100 -m 1g`:
        // zeros mean "unchanged" and are left alone.
        let body = br#"{"BlkioWeight":0,"CpuShares":0,"Memory":1073741824,"NanoCpus":0,"CpuPeriod":0,"CpuQuota":0,"MemoryReservation":0,"MemorySwap":0,"PidsLimit":100,"RestartPolicy":{"Name":"","MaximumRetryCount":0}}"#;
        let i = p.inspect_body(&r, body).unwrap();
        assert_eq!(&i.body.to_bytes()[..], &body[..]);
        assert!(i.notes.is_empty(), "{:?}", i.notes);
    }

    #[test]
    fn lifted_limits_let_unlimited_through() {
        let unlimited = with_host_config(r#""Memory":0,"MemorySwap":-1,"PidsLimit":-1"#);
        for yaml in [
            "limits: none",
            "limits: {memory: null, memory_swap: ~, pids: none}",
        ] {
            let p = on_host(yaml, 16 << 30);
            assert_eq!(p.limits, Limits::default(), "{yaml}");
            let v = create(&p, &unlimited).unwrap();
            let h = hc(&v);
            assert_eq!(
                (int(h, "Memory"), int(h, "MemorySwap"), int(h, "PidsLimit")),
                (Some(0), Some(-1), Some(-1)),
                "{yaml}"
            );
            let u = route("POST", "/v1.41/containers/c/update");
            p.inspect_body(&u, br#"{"PidsLimit":-1,"MemorySwap":-1}"#)
                .unwrap();
        }
        // Lifting one keeps the others.
        let p = on_host("limits: {pids: none}", 16 << 30);
        let v = create(&p, &with_host_config(r#""PidsLimit":-1"#)).unwrap();
        assert_eq!(int(hc(&v), "PidsLimit"), Some(-1));
        assert_eq!(int(hc(&v), "Memory"), Some(8 * GIB));
        assert_eq!(
            refused(&p, &with_host_config(r#""MemorySwap":-1"#)).rule,
            "limit_memory_swap"
        );
    }

    #[test]
    fn clamp_on_memory_also_clamps_unlimited_swap() {
        let p = on_host("limits: {memory: {max: 1GiB, on_exceed: clamp}}", 16 << 30);
        let v = create(
            &p,
            &with_host_config(r#""Memory":4294967296,"MemorySwap":-1"#),
        )
        .unwrap();
        assert_eq!(
            (int(hc(&v), "Memory"), int(hc(&v), "MemorySwap")),
            (Some(GIB), Some(GIB))
        );
        // The PIDs cap keeps its default and refuses.
        assert_eq!(
            refused(&p, &with_host_config(r#""PidsLimit":-1"#)).rule,
            "limit_pids"
        );
    }

    #[test]
    fn ram_in_bytes_matches_go_units() {
        for (s, n) in [
            ("10m", 10 << 20),
            ("10M", 10 << 20),
            ("1.5g", 3 << 29),
            ("512k", 512 << 10),
            ("100", 100),
            ("10mb", 10 << 20),
            ("10 MiB", 10 << 20),
            ("1KB", 1024),
        ] {
            assert_eq!(ram_in_bytes(s), Some(n), "{s}");
        }
        for s in ["", "m", "-1", "10x", "1..5m", ".5m"] {
            assert_eq!(ram_in_bytes(s), None, "{s}");
        }
    }
}
