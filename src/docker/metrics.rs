//! What the Docker proxy counts for the admin listener ([`crate::admin`]
//! reads it; nothing here serves it): requests by endpoint group and
//! status, policy refusals by rule, and a bounded list of the latest
//! refusals.
//!
//! Labels stay few and fixed: eight endpoint groups, the status codes the
//! daemon answers, the policy's rule names. Tenants, paths and IDs are
//! never labels; the latest refusals name the tenant and the path (never
//! the query, which may carry build arguments, nor any body).

use std::collections::VecDeque;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use time::OffsetDateTime;

use crate::wire::route::{Endpoint, Group};

/// How many refusals [`DockerMetrics::recent_refusals`] keeps.
pub const RECENT_REFUSALS: usize = 100;

/// The endpoint groups requests are counted by.
pub const GROUPS: [&str; 8] = [
    "containers",
    "images",
    "exec",
    "networks",
    "volumes",
    "build",
    "system",
    "other",
];

/// The group a request is counted in: builds apart from images, system
/// calls (ping, version, info, events, df) together, the rest (swarm,
/// plugins, sessions...) as `other`.
pub fn group_of(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Build | Endpoint::BuildPrune | Endpoint::BuildCancel => "build",
        _ => match endpoint.group() {
            Group::Containers => "containers",
            Group::Images => "images",
            Group::Exec => "exec",
            Group::Networks => "networks",
            Group::Volumes => "volumes",
            Group::System | Group::Events | Group::SystemDf => "system",
            _ => "other",
        },
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub group: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub rule: &'static str,
    /// `refused`, or `audited` (audit mode: logged and forwarded).
    pub action: &'static str,
}

/// One refusal, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalEvent {
    pub time: OffsetDateTime,
    pub tenant: String,
    pub listener: String,
    pub rule: &'static str,
    pub method: String,
    /// The request's path, without its query.
    pub path: String,
    pub status: u16,
    /// Audit mode: logged and forwarded.
    pub audit: bool,
}

/// The Docker proxy's counters.
#[derive(Debug, Default)]
pub struct DockerMetrics {
    /// Requests answered, by endpoint group and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Policy refusals, by rule.
    pub refusals: Family<RefusalLabels, Counter>,
    recent: Mutex<VecDeque<RefusalEvent>>,
}

impl DockerMetrics {
    /// Counts a request answered with `status`; `group` is `None` when the
    /// request could not be classified.
    pub fn request(&self, group: Option<&'static str>, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                group: group.unwrap_or("other"),
                status,
            })
            .inc();
    }

    /// Counts a refusal and keeps it among the latest.
    pub fn refusal(&self, event: RefusalEvent) {
        let action = if event.audit { "audited" } else { "refused" };
        self.refusals
            .get_or_create(&RefusalLabels {
                rule: event.rule,
                action,
            })
            .inc();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(event);
    }

    /// The latest refusals, newest first.
    pub fn recent_refusals(&self) -> Vec<RefusalEvent> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::route::classify;

    fn group(method: &str, path: &str) -> &'static str {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        group_of(&classify(&method, path).unwrap().endpoint)
    }

    #[test]
    fn requests_fall_into_eight_groups() {
        assert_eq!(group("POST", "/v1.41/containers/create"), "containers");
        assert_eq!(group("POST", "/v1.41/build"), "build");
        assert_eq!(group("GET", "/v1.41/images/json"), "images");
        assert_eq!(group("POST", "/exec/abc/start"), "exec");
        assert_eq!(group("GET", "/_ping"), "system");
        assert_eq!(group("GET", "/events"), "system");
        assert_eq!(group("GET", "/volumes"), "volumes");
        assert_eq!(group("GET", "/networks"), "networks");
        assert_eq!(group("GET", "/swarm"), "other");
        for g in [
            "containers",
            "build",
            "images",
            "exec",
            "system",
            "volumes",
            "networks",
            "other",
        ] {
            assert!(GROUPS.contains(&g));
        }
    }

    #[test]
    fn the_latest_refusals_are_bounded_newest_first() {
        let m = DockerMetrics::default();
        for i in 0..RECENT_REFUSALS + 5 {
            m.refusal(RefusalEvent {
                time: OffsetDateTime::UNIX_EPOCH,
                tenant: format!("t{i}"),
                listener: "l".into(),
                rule: "privileged",
                method: "POST".into(),
                path: "/containers/create".into(),
                status: 403,
                audit: false,
            });
        }
        let recent = m.recent_refusals();
        assert_eq!(recent.len(), RECENT_REFUSALS);
        assert_eq!(recent[0].tenant, format!("t{}", RECENT_REFUSALS + 4));
        let count = m
            .refusals
            .get_or_create(&RefusalLabels {
                rule: "privileged",
                action: "refused",
            })
            .get();
        assert_eq!(count, RECENT_REFUSALS as u64 + 5);
    }
}
