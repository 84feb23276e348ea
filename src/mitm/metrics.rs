//! Per-domain counters of the caching proxy, logged periodically and read
//! by the admin listener ([`crate::admin`] renders them).
//!
//! Domains are the cached ones (a request for `a.deb.example.test` counts
//! under `deb.example.test`): the configured domains, and those learned
//! while running, so the label set stays as small as the cached set.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::metrics::histogram::Histogram;

/// Buckets of the origin latency histogram, in seconds: 5 ms to ~41 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Counters of one configured domain.
#[derive(Debug)]
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
    /// Seconds from sending a request to an origin to its response head.
    pub origin_latency: Histogram,
}

impl Default for DomainCounters {
    fn default() -> Self {
        DomainCounters {
            requests: AtomicU64::default(),
            hits: AtomicU64::default(),
            misses: AtomicU64::default(),
            revalidations: AtomicU64::default(),
            bypasses: AtomicU64::default(),
            bytes_from_cache: AtomicU64::default(),
            bytes_from_origin: AtomicU64::default(),
            origin_errors: AtomicU64::default(),
            origin_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// The counter table, one row per cached domain (configured or learned: a
/// row is added when a learned domain is first served).
#[derive(Debug, Default)]
pub struct Metrics {
    domains: RwLock<BTreeMap<String, Arc<DomainCounters>>>,
}

/// (metric name, help, accessor)
pub type Row = (
    &'static str,
    &'static str,
    fn(&DomainCounters) -> &AtomicU64,
);

/// The counters, in [`Metrics::snapshot`]'s order.
pub const ROWS: [Row; 8] = [
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

    /// Every domain's counters (for the latency histograms).
    pub fn domains(&self) -> Vec<(String, Arc<DomainCounters>)> {
        self.domains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect()
    }

    /// A snapshot: per domain, the [`ROWS`] in order.
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
