//! The `cistern cache …` and `cistern ca …` commands: maintenance of the
//! disk cache and a look at the CA, from the same configuration file the
//! server uses. They work while cistern runs (the cache directory is safe
//! for concurrent processes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::domains::LeftOut;
use super::proxy::open_cache;
use super::{Caching, CachingConfig};

/// A command's failure, printed as `error: …`.
pub type CommandError = String;

/// `cistern cache stats`.
pub async fn cache_stats(config: &CachingConfig) -> Result<String, CommandError> {
    let cache = open_cache(config).await.map_err(|e| e.to_string())?;
    let stats = cache.store().stats();
    let limit = stats
        .max_bytes
        .map_or_else(|| "none".to_owned(), |m| format!("{m} bytes"));
    let mut out = format!(
        "cache: {}\nentries: {}\nbytes: {}\nlimit: {limit}\n",
        config.cache_dir.display(),
        stats.entries,
        stats.bytes
    );
    if let Some(settings) = &config.shared {
        let _ = writeln!(out, "shared: {}/{}", settings.bucket, settings.prefix);
        // The running server's counters (this process has made no request).
        match super::shared::load_stats(&config.cache_dir) {
            Some(s) => {
                let _ = write!(
                    out,
                    "shared lookups: {}\nshared hits: {}\nshared hit bytes: {}\nshared uploads: {}\nshared upload bytes: {}\nshared fleet leads: {}\nshared fleet waits: {}\nshared fleet takeovers: {}\nshared touches: {}\nshared errors: {}\nshared corrupt: {}\nshared dropped uploads: {}\n",
                    s.lookups, s.hits, s.hit_bytes, s.uploads, s.upload_bytes, s.fleet_leads, s.fleet_waits, s.fleet_takeovers, s.touches, s.errors, s.corrupt, s.dropped
                );
            }
            None => out.push_str(
                "shared counters: none saved yet (the server saves them while it runs)\n",
            ),
        }
    }
    Ok(out)
}

/// `cistern cache domains`: one line per host of the cached set, with its
/// hit ratio when `running` has the running cistern's figures (per domain:
/// requests, hit ratio), then the hosts discovery found but left out.
pub fn cache_domains(
    config: &CachingConfig,
    running: Option<&BTreeMap<String, (u64, Option<f64>)>>,
) -> String {
    let learned = &config.learned;
    let mut out = String::new();
    if running.is_none() {
        out.push_str("(no running cistern answered on the admin listener: no hit ratios)\n");
    }
    for domain in &config.domains {
        let ratio = match running.map(|r| r.get(domain)) {
            None => String::new(),
            Some(None) | Some(Some((0, _))) => "  no requests yet".to_owned(),
            Some(Some((requests, ratio))) => format!(
                "  {requests} requests, hit ratio {}",
                ratio.map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0))
            ),
        };
        match learned.added.get(domain) {
            Some(places) => {
                for (i, f) in places.iter().enumerate() {
                    let (head, tail) = if i == 0 {
                        (domain.as_str(), ratio.as_str())
                    } else {
                        ("", "")
                    };
                    let _ = writeln!(out, "{head:<40} learned: {} ({}){tail}", f.tool, f.from);
                }
            }
            None => {
                let _ = writeln!(out, "{domain:<40} configured{ratio}");
            }
        }
    }
    for (host, places) in &learned.routed {
        for (i, f) in places.iter().enumerate() {
            let head = if i == 0 { host.as_str() } else { "" };
            let _ = writeln!(
                out,
                "{head:<40} routed (under a cached domain), learned: {} ({})",
                f.tool, f.from
            );
        }
    }
    for (host, why) in &learned.left_out {
        let why = match why {
            LeftOut::Filtered => "left out: discover.allow/deny".to_owned(),
            LeftOut::OverLimit => "left out: over discover.max_hosts".to_owned(),
        };
        let _ = writeln!(out, "{host:<40} {why}");
    }
    out
}

/// `cistern cache verify`.
pub async fn cache_verify(config: &CachingConfig) -> Result<String, CommandError> {
    let cache = open_cache(config).await.map_err(|e| e.to_string())?;
    let report = cache.store().verify().await.map_err(|e| e.to_string())?;
    let mut out = format!(
        "checked {} entries, dropped {}\n",
        report.checked,
        report.dropped.len()
    );
    for key in report.dropped {
        let _ = writeln!(out, "dropped: {key}");
    }
    Ok(out)
}

/// `cistern cache gc`.
pub async fn cache_gc(
    config: &CachingConfig,
    shared: cistern_cache::Expiry,
) -> Result<String, CommandError> {
    let cache = open_cache(config).await.map_err(|e| e.to_string())?;
    let store = cache.store();
    let evicted = match config.max_size {
        Some(limit) => store.evict_to(limit).await.map_err(|e| e.to_string())?,
        None => 0,
    };
    let report = store.gc().await.map_err(|e| e.to_string())?;
    let mut out = format!(
        "evicted {evicted} entries over the size limit; removed {} unreferenced files ({} bytes)\n",
        report.removed_files, report.freed_bytes
    );
    if shared != cistern_cache::Expiry::default() {
        let Some(tier) = cache.shared() else {
            return Err(
                "--shared-older-than/--shared-max-size: no caching.cache.shared is configured"
                    .into(),
            );
        };
        let expired = tier
            .expire(shared, std::time::SystemTime::now())
            .await
            .map_err(|e| crate::http::error::chain(&e))?;
        let _ = writeln!(
            out,
            "shared tier: removed {} index objects and {} bodies ({} bytes); {} bytes of bodies left",
            expired.index_objects, expired.bodies, expired.bytes, expired.kept_bytes
        );
    }
    Ok(out)
}

/// `cistern cache purge [URL-glob]` (default: everything).
pub async fn cache_purge(
    config: &CachingConfig,
    pattern: Option<&str>,
) -> Result<String, CommandError> {
    let cache = open_cache(config).await.map_err(|e| e.to_string())?;
    let pattern = pattern.unwrap_or("**");
    let removed = cache
        .store()
        .purge(pattern)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("purged {removed} entries matching {pattern}\n"))
}

/// `cistern ca show [--all]`: the current CA (the one new containers get),
/// its SHA-256 fingerprint and expiry, as PEM with comment lines; with
/// `all`, every generation valid now (the bundle new containers get).
/// Never the key.
pub fn ca_show(config: &CachingConfig, all: bool) -> Result<String, CommandError> {
    let caching = Caching::open(config.clone()).map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc();
    let current = caching
        .ca
        .current_for_new_container(now)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let valid = caching.ca.cas_valid_at(now);
    for cert in &valid {
        let is_current = cert.id == current.id;
        if !(all || is_current) {
            continue;
        }
        let _ = writeln!(out, "# id: {}", cert.id);
        let _ = writeln!(out, "# sha256: {}", fingerprint(cert.der.as_ref()));
        let _ = writeln!(out, "# not_before: {}", cert.not_before);
        let _ = writeln!(out, "# expires: {}", cert.not_after);
        if is_current {
            let _ = writeln!(out, "# current: handed to new containers");
        }
        out.push_str(&cert.pem);
        if !cert.pem.ends_with('\n') {
            out.push('\n');
        }
    }
    if !all && valid.len() > 1 {
        let _ = writeln!(
            out,
            "# {} more generation(s) still valid; `cistern ca show --all` prints them",
            valid.len() - 1
        );
    }
    Ok(out)
}

/// `cistern ca rotate`: creates a new generation now. A running cistern
/// adopts it at its next maintenance tick (within a minute); older generations stay
/// valid until they expire.
pub fn ca_rotate(config: &CachingConfig) -> Result<String, CommandError> {
    let caching = Caching::open(config.clone()).map_err(|e| e.to_string())?;
    let cert = caching
        .ca
        .rotate(time::OffsetDateTime::now_utc())
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "created CA {} (sha256 {}), valid until {}\n",
        cert.id,
        fingerprint(cert.der.as_ref()),
        cert.not_after
    ))
}

/// `AB:CD:…` SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
