//! Per-domain counters of the caching proxy, rendered as Prometheus text
//! for the admin listener's `/metrics` and logged periodically.
//!
//! Domains are the configured ones (a request for `a.deb.example.test`
//! counts under `deb.example.test`), so the label set is fixed at start.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use cistern_cache::{SharedStats, Stats};

/// Counters of one configured domain.
#[derive(Debug, Default)]
pub struct DomainCounters {
    /// Requests answered (any outcome).
    pub requests: AtomicU64,
    /// Served from the cache without asking the origin.
    pub hits: AtomicU64,
    /// Fetched from the origin under the cache (stored or not).
    pub misses: AtomicU64,
    /// Revalidated with the origin, which answered 304.
    pub revalidations: AtomicU64,
    /// Forwarded without the cache (method, rule, credentials).
    pub bypasses: AtomicU64,
    /// Body bytes sent to clients from the cache.
    pub bytes_from_cache: AtomicU64,
    /// Body bytes sent to clients from origins.
    pub bytes_from_origin: AtomicU64,
    /// Origin connection failures, 5xx-free errors and cut-short bodies.
    pub origin_errors: AtomicU64,
}

/// The counter table, one row per cached domain (configured or learned: a
/// row is added when a learned domain is first served).
#[derive(Debug, Default)]
pub struct Metrics {
    domains: RwLock<BTreeMap<String, Arc<DomainCounters>>>,
}

/// (metric name, help, accessor)
type Row = (
    &'static str,
    &'static str,
    fn(&DomainCounters) -> &AtomicU64,
);

const ROWS: [Row; 8] = [
    (
        "cistern_cache_requests_total",
        "Requests to cached domains.",
        |c| &c.requests,
    ),
    (
        "cistern_cache_hits_total",
        "Responses served from the cache.",
        |c| &c.hits,
    ),
    (
        "cistern_cache_misses_total",
        "Responses fetched from the origin through the cache.",
        |c| &c.misses,
    ),
    (
        "cistern_cache_revalidations_total",
        "Stored entries the origin confirmed with 304.",
        |c| &c.revalidations,
    ),
    (
        "cistern_cache_bypasses_total",
        "Requests forwarded without the cache.",
        |c| &c.bypasses,
    ),
    (
        "cistern_cache_bytes_from_cache_total",
        "Body bytes sent from the cache.",
        |c| &c.bytes_from_cache,
    ),
    (
        "cistern_cache_bytes_from_origin_total",
        "Body bytes sent from origins.",
        |c| &c.bytes_from_origin,
    ),
    (
        "cistern_cache_origin_errors_total",
        "Origin failures (connect, TLS, cut-short bodies).",
        |c| &c.origin_errors,
    ),
];

impl Metrics {
    /// A table for these domains.
    pub fn new<'a>(domains: impl IntoIterator<Item = &'a str>) -> Self {
        Metrics {
            domains: RwLock::new(
                domains
                    .into_iter()
                    .map(|d| (d.to_owned(), Arc::default()))
                    .collect(),
            ),
        }
    }

    /// The counters of a cached domain (the proxy serves cached domains
    /// only, so the table stays as small as the cached set).
    pub fn domain(&self, domain: &str) -> Option<Arc<DomainCounters>> {
        if let Some(counters) = self
            .domains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
        {
            return Some(counters.clone());
        }
        let mut domains = self.domains.write().unwrap_or_else(PoisonError::into_inner);
        Some(domains.entry(domain.to_owned()).or_default().clone())
    }

    /// A snapshot: per domain, metric name → value.
    pub fn snapshot(&self) -> BTreeMap<String, [u64; 8]> {
        self.domains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(d, c)| {
                (
                    d.clone(),
                    ROWS.map(|(_, _, get)| get(c).load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self, store: &Stats) -> String {
        let mut out = String::new();
        let snapshot = self.snapshot();
        for (i, (name, help, _)) in ROWS.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (domain, values) in &snapshot {
                let _ = writeln!(out, "{name}{{domain=\"{}\"}} {}", escape(domain), values[i]);
            }
        }
        let gauges: [(&str, &str, u64); 5] = [
            (
                "cistern_cache_entries",
                "Entries in the disk cache.",
                store.entries,
            ),
            (
                "cistern_cache_size_bytes",
                "Distinct content bytes in the disk cache.",
                store.bytes,
            ),
            (
                "cistern_cache_in_flight",
                "Origin fetches in flight under single-flight.",
                store.in_flight,
            ),
            (
                "cistern_cache_memory_bytes",
                "Bytes of verified bodies held in memory.",
                store.memory_bytes,
            ),
            (
                "cistern_cache_memory_entries",
                "Verified bodies held in memory.",
                store.memory_entries,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        if let Some(max) = store.max_bytes {
            let _ = writeln!(
                out,
                "# HELP cistern_cache_max_size_bytes Configured size limit.\n# TYPE cistern_cache_max_size_bytes gauge\ncistern_cache_max_size_bytes {max}"
            );
        }
        let totals: [(&str, &str, u64); 4] = [
            (
                "cistern_cache_evictions_total",
                "Entries evicted for space.",
                store.evictions,
            ),
            (
                "cistern_cache_aborted_writes_total",
                "Cache writes dropped before commit.",
                store.aborted_writes,
            ),
            (
                "cistern_cache_corrupt_total",
                "Entries dropped after failing their integrity check.",
                store.corrupt,
            ),
            (
                "cistern_cache_memory_hits_total",
                "Hits whose body was sent from memory.",
                store.memory_hits,
            ),
        ];
        for (name, help, value) in totals {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }

    /// The shared cache tier's counters, in the same text format.
    pub fn render_shared(shared: &SharedStats) -> String {
        let mut out = String::new();
        let totals: [(&str, &str, u64); 11] = [
            (
                "cistern_cache_shared_lookups_total",
                "Local misses looked up in the shared tier.",
                shared.lookups,
            ),
            (
                "cistern_cache_shared_hits_total",
                "Bodies filled from the shared tier.",
                shared.hits,
            ),
            (
                "cistern_cache_shared_hit_bytes_total",
                "Bytes filled from the shared tier.",
                shared.hit_bytes,
            ),
            (
                "cistern_cache_shared_uploads_total",
                "Bodies uploaded to the shared tier.",
                shared.uploads,
            ),
            (
                "cistern_cache_shared_upload_bytes_total",
                "Bytes uploaded to the shared tier.",
                shared.upload_bytes,
            ),
            (
                "cistern_cache_shared_index_uploads_total",
                "Index objects written to the shared tier.",
                shared.index_uploads,
            ),
            (
                "cistern_cache_shared_fleet_leads_total",
                "Misses this runner downloaded for the fleet (it held their lock).",
                shared.fleet_leads,
            ),
            (
                "cistern_cache_shared_fleet_waits_total",
                "Misses that waited for another runner's download.",
                shared.fleet_waits,
            ),
            (
                "cistern_cache_shared_errors_total",
                "Failed or timed-out requests to the shared tier.",
                shared.errors,
            ),
            (
                "cistern_cache_shared_corrupt_total",
                "Shared objects that failed their content address (deleted).",
                shared.corrupt,
            ),
            (
                "cistern_cache_shared_dropped_uploads_total",
                "Uploads dropped because the upload queue was full.",
                shared.dropped,
            ),
        ];
        for (name, help, value) in totals {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }

    /// Logs one line per domain whose counters changed since `last`;
    /// returns the new snapshot to compare with next time.
    pub fn log_changes(&self, last: &BTreeMap<String, [u64; 8]>) -> BTreeMap<String, [u64; 8]> {
        let now: BTreeMap<String, [u64; 8]> = self
            .snapshot()
            .into_iter()
            .map(|(d, v)| (d.to_owned(), v))
            .collect();
        for (domain, v) in &now {
            if last.get(domain) != Some(v) {
                tracing::info!(
                    domain = %domain,
                    requests = v[0],
                    hits = v[1],
                    misses = v[2],
                    revalidations = v[3],
                    bypasses = v[4],
                    bytes_from_cache = v[5],
                    bytes_from_origin = v[6],
                    origin_errors = v[7],
                    "cache counters"
                );
            }
        }
        now
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text_per_domain() {
        let m = Metrics::new(["deb.example.test", "npm.example.test"]);
        let c = m.domain("deb.example.test").unwrap();
        c.hits.fetch_add(3, Ordering::Relaxed);
        c.bytes_from_cache.fetch_add(4096, Ordering::Relaxed);
        let text = m.render(&Stats::default());
        assert!(text.contains("# TYPE cistern_cache_hits_total counter"));
        assert!(text.contains("cistern_cache_hits_total{domain=\"deb.example.test\"} 3"));
        assert!(text.contains("cistern_cache_hits_total{domain=\"npm.example.test\"} 0"));
        assert!(
            text.contains("cistern_cache_bytes_from_cache_total{domain=\"deb.example.test\"} 4096")
        );
        assert!(text.contains("cistern_cache_entries 0"));
    }
}
