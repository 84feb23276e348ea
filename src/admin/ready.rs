//! `/readyz`: whether cistern can do its work now. Each check is named in
//! the answer; any failure makes it 503.
//!
//! - `daemon`: the upstream daemon answers `GET /_ping` with 200 in time;
//! - `cache_dir` (with `caching:`): a file can be created in the cache
//!   directory;
//! - `ca` (with `caching:`): a CA generation is valid now.

use std::time::Duration;

use serde_json::{json, Value};

use super::Parts;
use crate::daemon::client::Daemon;

/// How long the daemon may take to answer `_ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The checks, in order, and what failed.
#[derive(Debug, Default)]
pub struct Report {
    /// `(name, None)` passed, `(name, Some(why))` failed.
    pub checks: Vec<(&'static str, Option<String>)>,
}

impl Report {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|(_, failed)| failed.is_none())
    }

    pub fn to_json(&self) -> Value {
        let checks: serde_json::Map<String, Value> = self
            .checks
            .iter()
            .map(|(name, failed)| {
                let value = match failed {
                    None => json!({ "ok": true }),
                    Some(why) => json!({ "ok": false, "error": why }),
                };
                (name.to_string(), value)
            })
            .collect();
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|(_, f)| f.is_some())
            .map(|(n, _)| *n)
            .collect();
        json!({ "ready": self.ready(), "failed": failed, "checks": checks })
    }
}

/// Runs every check.
pub async fn check(parts: &Parts) -> Report {
    let mut report = Report::default();
    report.checks.push(("daemon", daemon(parts).await.err()));
    if let Some((caching, _)) = &parts.caching {
        let dir = caching.config.cache_dir.clone();
        let writable = tokio::task::spawn_blocking(move || cache_dir(&dir))
            .await
            .unwrap_or_else(|err| Err(format!("check task: {err}")));
        report.checks.push(("cache_dir", writable.err()));
        let now = time::OffsetDateTime::now_utc();
        let ca = match caching.ca.cas_valid_at(now).is_empty() {
            true => Err("no CA generation is valid now".to_string()),
            false => Ok(()),
        };
        report.checks.push(("ca", ca.err()));
    }
    report
}

async fn daemon(parts: &Parts) -> Result<(), String> {
    let daemon = Daemon::new(parts.docker.upstream());
    match tokio::time::timeout(PING_TIMEOUT, daemon.get("/_ping")).await {
        Ok(Ok(answer)) if answer.status.is_success() => Ok(()),
        Ok(Ok(answer)) => Err(format!("_ping answered {}", answer.status.as_u16())),
        Ok(Err(err)) => Err(err.message),
        Err(_) => Err(format!("_ping took longer than {PING_TIMEOUT:?}")),
    }
}

/// Creates and removes a file in the cache directory.
fn cache_dir(dir: &std::path::Path) -> Result<(), String> {
    let probe = dir.join(format!(".cistern-ready-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|err| format!("cannot write in {}: {err}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_names_itself_and_unreadies() {
        let report = Report {
            checks: vec![("daemon", Some("gone".into())), ("ca", None)],
        };
        assert!(!report.ready());
        let v = report.to_json();
        assert_eq!(v["ready"], false);
        assert_eq!(v["failed"], json!(["daemon"]));
        assert_eq!(v["checks"]["daemon"]["error"], "gone");
        assert_eq!(v["checks"]["ca"]["ok"], true);
    }

    #[test]
    fn a_cache_dir_that_cannot_be_written_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(cache_dir(dir.path()).is_ok());
        assert!(cache_dir(&dir.path().join("missing")).is_err());
    }
}
