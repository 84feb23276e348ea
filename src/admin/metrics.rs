//! `/metrics`: one Prometheus registry (`prometheus-client`) over what the
//! rooms below count, in the Prometheus text format (0.0.4).
//!
//! - `cistern_docker_requests_total{group,status}` and
//!   `cistern_policy_refusals_total{rule,action}`: the Docker proxy's
//!   families ([`crate::docker::metrics`]), registered as they are;
//! - `cistern_tenants`, `cistern_job_sockets`, `cistern_container_sockets`:
//!   gauges set just before each scrape;
//! - `cistern_cache_*{domain}` and `cistern_origin_latency_seconds{domain}`:
//!   the caching proxy's counters, read at each scrape (their names are
//!   those the caching proxy's own admin listener used);
//! - `cistern_ca_expiry_seconds{generation}`: seconds until each CA
//!   generation valid now expires.
//!
//! Label values are bounded: endpoint groups, status codes, rule names,
//! configured domains, the few CA generations alive at once.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::docker::metrics::DockerMetrics;
use crate::mitm::metrics::{Metrics as CacheCounters, ROWS};
use crate::mitm::proxy::Running;
use crate::mitm::Caching;

/// Gauges set before each scrape.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub tenants: Gauge,
    pub job_sockets: Gauge,
    pub container_sockets: Gauge,
}

/// The registry and the gauges it holds.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
    pub gauges: Gauges,
}

impl Exposition {
    pub fn new(
        docker: &DockerMetrics,
        cache: Option<Running>,
        caching: Option<Arc<Caching>>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "cistern_docker_requests",
            "Docker API requests answered, by endpoint group and status",
            docker.requests.clone(),
        );
        registry.register(
            "cistern_policy_refusals",
            "Requests the policy refused (or, in audit mode, would have), by rule",
            docker.refusals.clone(),
        );
        let gauges = Gauges::default();
        registry.register(
            "cistern_tenants",
            "Tenants owning containers, volumes, networks or images on the daemon",
            gauges.tenants.clone(),
        );
        registry.register(
            "cistern_job_sockets",
            "Per-job sockets open",
            gauges.job_sockets.clone(),
        );
        registry.register(
            "cistern_container_sockets",
            "Container sockets open",
            gauges.container_sockets.clone(),
        );
        if let Some(cache) = cache {
            registry.register_collector(Box::new(CacheCollector(cache)));
        }
        if let Some(caching) = caching {
            registry.register_collector(Box::new(CaCollector(caching)));
        }
        Exposition { registry, gauges }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        out
    }
}

/// The content type of [`Exposition::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The caching proxy's counters and its store's figures, read at each
/// scrape.
struct CacheCollector(Running);

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheCollector")
    }
}

fn counters(
    encoder: &mut DescriptorEncoder,
    metrics: &CacheCounters,
) -> Result<(), std::fmt::Error> {
    let snapshot = metrics.snapshot();
    for (i, (name, help, _)) in ROWS.iter().enumerate() {
        let name = name.strip_suffix("_total").unwrap_or(name);
        let help = help.strip_suffix('.').unwrap_or(help);
        let mut family = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (domain, values) in &snapshot {
            let labels = [("domain", domain.as_str())];
            ConstCounter::new(values[i]).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "cistern_origin_latency_seconds",
        "Time from a request sent to an origin to its response head",
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    for (domain, c) in metrics.domains() {
        let labels = [("domain", domain.as_str())];
        c.origin_latency.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counters(&mut encoder, &self.0.metrics)?;
        let store = self.0.cache.store().stats();
        let gauges: [(&str, &str, u64); 5] = [
            (
                "cistern_cache_entries",
                "Entries in the disk cache",
                store.entries,
            ),
            (
                "cistern_cache_size_bytes",
                "Distinct content bytes in the disk cache",
                store.bytes,
            ),
            (
                "cistern_cache_in_flight",
                "Origin fetches in flight under single-flight",
                store.in_flight,
            ),
            (
                "cistern_cache_memory_bytes",
                "Bytes of verified bodies held in memory",
                store.memory_bytes,
            ),
            (
                "cistern_cache_memory_entries",
                "Verified bodies held in memory",
                store.memory_entries,
            ),
        ];
        for (name, help, value) in gauges {
            one(&mut encoder, name, help, ConstGauge::new(value as i64))?;
        }
        if let Some(max) = store.max_bytes {
            one(
                &mut encoder,
                "cistern_cache_max_size_bytes",
                "Configured size limit",
                ConstGauge::new(max as i64),
            )?;
        }
        let totals: [(&str, &str, u64); 4] = [
            (
                "cistern_cache_evictions",
                "Entries evicted for space",
                store.evictions,
            ),
            (
                "cistern_cache_aborted_writes",
                "Cache writes dropped before commit",
                store.aborted_writes,
            ),
            (
                "cistern_cache_corrupt",
                "Entries dropped after failing their integrity check",
                store.corrupt,
            ),
            (
                "cistern_cache_memory_hits",
                "Hits whose body was sent from memory",
                store.memory_hits,
            ),
        ];
        for (name, help, value) in totals {
            one(&mut encoder, name, help, ConstCounter::new(value))?;
        }
        if let Some(shared) = self.0.cache.shared() {
            let s = shared.stats();
            let shared_totals: [(&str, &str, u64); 13] = [
                (
                    "cistern_cache_shared_lookups",
                    "Local misses looked up in the shared tier",
                    s.lookups,
                ),
                (
                    "cistern_cache_shared_hits",
                    "Bodies filled from the shared tier",
                    s.hits,
                ),
                (
                    "cistern_cache_shared_hit_bytes",
                    "Bytes filled from the shared tier",
                    s.hit_bytes,
                ),
                (
                    "cistern_cache_shared_uploads",
                    "Bodies uploaded to the shared tier",
                    s.uploads,
                ),
                (
                    "cistern_cache_shared_upload_bytes",
                    "Bytes uploaded to the shared tier",
                    s.upload_bytes,
                ),
                (
                    "cistern_cache_shared_index_uploads",
                    "Index objects written to the shared tier",
                    s.index_uploads,
                ),
                (
                    "cistern_cache_shared_fleet_leads",
                    "Misses this runner downloaded for the fleet (it held their lock)",
                    s.fleet_leads,
                ),
                (
                    "cistern_cache_shared_fleet_waits",
                    "Misses that waited for another runner's download",
                    s.fleet_waits,
                ),
                (
                    "cistern_cache_shared_fleet_takeovers",
                    "Fleet locks taken over from a runner that stopped renewing them",
                    s.fleet_takeovers,
                ),
                (
                    "cistern_cache_shared_touches",
                    "Index objects rewritten to record a use (for gc)",
                    s.touches,
                ),
                (
                    "cistern_cache_shared_errors",
                    "Failed or timed-out requests to the shared tier",
                    s.errors,
                ),
                (
                    "cistern_cache_shared_corrupt",
                    "Shared objects that failed their content address (deleted)",
                    s.corrupt,
                ),
                (
                    "cistern_cache_shared_dropped_uploads",
                    "Uploads dropped because the upload queue was full",
                    s.dropped,
                ),
            ];
            for (name, help, value) in shared_totals {
                one(&mut encoder, name, help, ConstCounter::new(value))?;
            }
        }
        Ok(())
    }
}

/// Seconds until each CA generation valid now expires.
struct CaCollector(Arc<Caching>);

impl std::fmt::Debug for CaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaCollector")
    }
}

impl Collector for CaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = time::OffsetDateTime::now_utc();
        let mut family = encoder.encode_descriptor(
            "cistern_ca_expiry_seconds",
            "Seconds until the CA generation stops being valid (its not_after)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ca in self.0.ca.cas_valid_at(now) {
            let left = (ca.not_after - now).whole_seconds();
            let labels = [("generation", ca.id.as_str())];
            ConstGauge::new(left).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Counts a value into a gauge (an `i64`), saturating.
pub fn set(gauge: &Gauge, value: usize) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_requests_refusals_and_gauges_render_as_prometheus_text() {
        let docker = DockerMetrics::default();
        docker.request(Some("containers"), 201);
        docker.request(Some("containers"), 201);
        docker.request(None, 404);
        docker.refusal(crate::docker::metrics::RefusalEvent {
            time: time::OffsetDateTime::UNIX_EPOCH,
            tenant: "alice".into(),
            listener: "ci".into(),
            rule: "privileged",
            method: "POST".into(),
            path: "/containers/create".into(),
            status: 403,
            audit: true,
        });
        let exposition = Exposition::new(&docker, None, None);
        set(&exposition.gauges.job_sockets, 2);
        let text = exposition.render();
        for line in [
            "# TYPE cistern_docker_requests_total counter",
            "cistern_docker_requests_total{group=\"containers\",status=\"201\"} 2",
            "cistern_docker_requests_total{group=\"other\",status=\"404\"} 1",
            "cistern_policy_refusals_total{rule=\"privileged\",action=\"audited\"} 1",
            "# TYPE cistern_job_sockets gauge",
            "cistern_job_sockets 2",
            "cistern_tenants 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        // No tenant, path or listener ever becomes a label.
        assert!(!text.contains("alice") && !text.contains("/containers"));
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }
}
