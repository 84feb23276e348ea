//! The JSON API under `/api/v1/` (described by `openapi.json` beside this
//! file): tenants and what they own, job and container sockets, cache
//! statistics and history, the CAs, the latest refusals. Each function
//! builds one answer from the rooms it reads; nothing here writes.
//!
//! Tenants come from the daemon's labels and the image state file (the
//! same inventory as `cistern tenants`); sockets from `jobs.json` and
//! `sockets.json`. Never bodies, environments, credentials or keys.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::history::{ratio, Sample, PERIOD};
use super::metrics::{set, Gauges};
use super::Parts;
use crate::daemon::client::Daemon;
use crate::mitm::metrics::ROWS;
use crate::tenancy::ownership::cleanup::{inventory, Inventory};

/// How long the daemon may take to list what tenants own.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);

/// A time in RFC 3339, to the second.
fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn unix_time(secs: u64) -> String {
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .map(rfc3339)
        .unwrap_or_default()
}

/// Every tenant of this instance that owns something, by name.
async fn all_inventories(
    parts: &Parts,
) -> Result<std::collections::BTreeMap<String, Inventory>, String> {
    let docker = &parts.docker;
    let state = docker
        .ownership()
        .store()
        .state()
        .await
        .map_err(|e| e.message)?;
    let daemon = Daemon::new(docker.upstream());
    match tokio::time::timeout(
        DAEMON_TIMEOUT,
        inventory(daemon, &state, &parts.instance, None),
    )
    .await
    {
        Ok(Ok(all)) => Ok(all),
        Ok(Err(err)) => Err(err.message),
        Err(_) => Err("the Docker daemon did not list resources in time".into()),
    }
}

/// `GET /api/v1/tenants`.
pub async fn tenants(parts: &Parts) -> Result<Value, String> {
    let all = all_inventories(parts).await?;
    let named = |pairs: &[(String, String)]| -> Vec<Value> {
        pairs
            .iter()
            .map(|(id, name)| json!({ "id": id, "name": name }))
            .collect()
    };
    let tenants: Vec<Value> = all
        .iter()
        .map(|(tenant, inv)| {
            json!({
                "name": tenant,
                "containers": named(&inv.containers),
                "volumes": inv.volumes,
                "networks": named(&inv.networks),
                "images": inv.images,
                "tags": inv.tags,
            })
        })
        .collect();
    Ok(json!({ "instance": parts.instance, "tenants": tenants }))
}

/// `GET /api/v1/sockets`: job sockets and container sockets.
pub fn sockets(parts: &Parts) -> Result<Value, String> {
    let jobs = parts.docker.jobs();
    let registry = jobs.registry().map_err(|e| e.message)?;
    let sockets = jobs.socket_registry().map_err(|e| e.message)?;
    let jobs: Vec<Value> = registry
        .jobs
        .iter()
        .map(|(id, j)| {
            json!({
                "id": id,
                "tenant": j.tenant,
                "parent": j.parent,
                "listener": j.listener,
                "socket": j.socket,
                "created": unix_time(j.created),
                "container": j.container,
            })
        })
        .collect();
    let containers: Vec<Value> = sockets
        .sockets
        .iter()
        .map(|(id, s)| {
            json!({
                "id": id,
                "tenant": s.tenant,
                "listener": s.listener,
                "socket": s.socket,
                "created": unix_time(s.created),
                "container": s.container,
            })
        })
        .collect();
    Ok(json!({ "jobs": jobs, "containers": containers }))
}

/// The cache's running totals over every domain now.
pub fn cache_sample(parts: &Parts) -> Sample {
    let mut sample = Sample {
        time: OffsetDateTime::now_utc().unix_timestamp(),
        ..Sample::default()
    };
    if let Some((_, running)) = &parts.caching {
        for values in running.metrics.snapshot().values() {
            sample.requests += values[0];
            sample.hits += values[1];
            sample.misses += values[2];
            sample.revalidations += values[3];
            sample.bypasses += values[4];
            sample.bytes_from_cache += values[5];
            sample.bytes_from_origin += values[6];
        }
    }
    sample
}

/// `GET /api/v1/cache`: per domain (busiest first), totals, the disk.
pub fn cache(parts: &Parts) -> Value {
    let Some((caching, running)) = &parts.caching else {
        return json!({ "enabled": false });
    };
    let mut domains: Vec<(String, [u64; 8])> = running.metrics.snapshot().into_iter().collect();
    domains.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then(a.0.cmp(&b.0)));
    let row = |values: &[u64; 8]| {
        let mut obj = serde_json::Map::new();
        for (i, (name, _, _)) in ROWS.iter().enumerate() {
            let key = name
                .trim_start_matches("cistern_cache_")
                .trim_end_matches("_total");
            obj.insert(key.into(), values[i].into());
        }
        obj.insert(
            "hit_ratio".into(),
            json!(ratio(values[1] + values[3], values[2])),
        );
        obj
    };
    let domains: Vec<Value> = domains
        .iter()
        .map(|(domain, values)| {
            let mut obj = row(values);
            obj.insert("domain".into(), json!(domain));
            Value::Object(obj)
        })
        .collect();
    let mut totals = [0u64; 8];
    for values in running.metrics.snapshot().values() {
        for (t, v) in totals.iter_mut().zip(values) {
            *t += v;
        }
    }
    let stats = running.cache.store().stats();
    json!({
        "enabled": true,
        "cache_dir": caching.config.cache_dir,
        "domains": domains,
        "totals": Value::Object(row(&totals)),
        "disk": {
            "entries": stats.entries,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "evictions": stats.evictions,
            "corrupt": stats.corrupt,
        },
        "memory": {
            "entries": stats.memory_entries,
            "bytes": stats.memory_bytes,
            "hits": stats.memory_hits,
        },
    })
}

/// `GET /api/v1/cache/history`: the samples kept, then one taken now.
pub fn history(parts: &Parts, mut samples: Vec<Sample>) -> Value {
    if parts.caching.is_none() {
        return json!({ "enabled": false, "period_seconds": PERIOD.as_secs(), "samples": [] });
    }
    samples.push(cache_sample(parts));
    json!({
        "enabled": true,
        "period_seconds": PERIOD.as_secs(),
        "samples": samples,
    })
}

/// A certificate's SHA-256 fingerprint, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `GET /api/v1/cas`: the CA generations valid now, newest first.
pub fn cas(parts: &Parts) -> Value {
    let Some((caching, _)) = &parts.caching else {
        return json!({ "enabled": false, "cas": [] });
    };
    let now = OffsetDateTime::now_utc();
    let cas: Vec<Value> = caching
        .ca
        .cas_valid_at(now)
        .into_iter()
        .enumerate()
        .map(|(i, cert)| {
            let constraints = caching
                .ca
                .get(&cert.id)
                .map(|ca| ca.domains().to_vec())
                .unwrap_or_default();
            json!({
                "generation": cert.id.as_str(),
                "newest": i == 0,
                "not_before": rfc3339(cert.not_before),
                "not_after": rfc3339(cert.not_after),
                "expires_in_seconds": (cert.not_after - now).whole_seconds(),
                "name_constraints": constraints,
                "sha256_fingerprint": fingerprint(&cert.der),
            })
        })
        .collect();
    json!({ "enabled": true, "cas": cas })
}

/// `GET /api/v1/refusals`: the latest, newest first.
pub fn refusals(parts: &Parts) -> Value {
    let refusals: Vec<Value> = parts
        .docker
        .metrics()
        .recent_refusals()
        .into_iter()
        .map(|r| {
            json!({
                "time": rfc3339(r.time),
                "tenant": r.tenant,
                "listener": r.listener,
                "rule": r.rule,
                "method": r.method,
                "endpoint": r.path,
                "status": r.status,
                "audit": r.audit,
            })
        })
        .collect();
    json!({
        "kept": crate::docker::metrics::RECENT_REFUSALS,
        "refusals": refusals,
    })
}

/// Sets the tenant and socket gauges before a scrape. A daemon that does
/// not answer leaves the tenant gauge as it was.
pub async fn set_gauges(parts: &Parts, gauges: &Gauges) {
    match all_inventories(parts).await {
        Ok(all) => set(&gauges.tenants, all.len()),
        Err(err) => tracing::debug!(error = %err, "tenants not counted"),
    }
    let jobs = parts.docker.jobs();
    if let Ok(registry) = jobs.registry() {
        set(&gauges.job_sockets, registry.jobs.len());
    }
    if let Ok(sockets) = jobs.socket_registry() {
        set(&gauges.container_sockets, sockets.sockets.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_separated_uppercase_sha256() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF:"), "{f}");
    }
}
