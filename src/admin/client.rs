//! Asking a running cistern's admin listener, for commands run beside it
//! (`cistern cache domains` shows each domain's hit ratio from it).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::daemon::client::{json, Daemon};
use crate::daemon::upstream::{client, Upstream, UpstreamEndpoint};

use super::AdminConfig;

/// How long a command waits for the admin listener.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Per cached domain: requests served and the hit ratio (hits and
/// revalidations over everything served from the cache or the origin), as
/// the running cistern behind `admin` counts them; `None` when none answers.
pub async fn cache_hit_ratios(admin: &AdminConfig) -> Option<BTreeMap<String, (u64, Option<f64>)>> {
    let endpoint = match admin {
        AdminConfig::Tcp(address) => UpstreamEndpoint::Tcp(address.to_string()),
        AdminConfig::Unix(unix) => UpstreamEndpoint::Unix(unix.path.clone()),
    };
    let http = client(&Upstream {
        endpoint,
        connect_timeout: TIMEOUT,
    });
    let answer = tokio::time::timeout(TIMEOUT, Daemon::new(&http).get("/api/v1/cache"))
        .await
        .ok()?
        .ok()?;
    if answer.status != http::StatusCode::OK {
        return None;
    }
    let body = json(&answer).ok()?;
    let domains = body.get("domains")?.as_array()?;
    Some(
        domains
            .iter()
            .filter_map(|d| {
                let name = d.get("domain")?.as_str()?.to_owned();
                let requests = d.get("requests").and_then(|r| r.as_u64()).unwrap_or(0);
                let ratio = d.get("hit_ratio").and_then(|r| r.as_f64());
                Some((name, (requests, ratio)))
            })
            .collect(),
    )
}
