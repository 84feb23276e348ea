//! The shared cache tier's settings as the cache crate takes them: the
//! credentials read from their file or from the environment, and the
//! endpoint's trust roots (the system's, plus `upstream.extra_roots`).
//!
//! Credentials are read when the cache opens and go straight into the
//! cache crate's [`Credentials`], whose `Debug` redacts them; no error here
//! quotes a credential.

use std::path::Path;

use cistern_cache::{Credentials, SharedConfig, SharedStats};

use super::config::{CredentialSource, SharedSettings};
use super::error::StartError;

/// The cache crate's settings for the configured shared tier.
pub fn shared_config(
    settings: &SharedSettings,
    extra_roots: &[std::path::PathBuf],
) -> Result<SharedConfig, StartError> {
    let credentials = match &settings.credentials {
        CredentialSource::File(path) => from_file(path)?,
        CredentialSource::Env => from_env()?,
    };
    let mut roots = Vec::new();
    for path in extra_roots {
        let pem = std::fs::read(path)
            .map_err(|e| StartError::Tls(format!("reading extra root {}: {e}", path.display())))?;
        roots.push(pem);
    }
    Ok(SharedConfig {
        endpoint: settings.endpoint.clone(),
        bucket: settings.bucket.clone(),
        region: settings.region.clone(),
        prefix: settings.prefix.clone(),
        credentials,
        upload_queue: settings.upload_queue,
        timeout: settings.timeout,
        extra_roots: roots,
        touch_every: settings.touch_every,
    })
}

/// Where the running server saves the shared tier's counters, in the
/// cache directory, for `cistern cache stats` (another process).
const STATS_FILE: &str = "cistern-shared-stats.json";

/// Saves the shared tier's counters for `cistern cache stats`.
pub async fn save_stats(cache_dir: &Path, stats: &SharedStats) {
    let Ok(json) = serde_json::to_vec(stats) else {
        return;
    };
    let tmp = cache_dir.join(format!("{STATS_FILE}.tmp"));
    let saved = match tokio::fs::write(&tmp, json).await {
        Ok(()) => tokio::fs::rename(&tmp, cache_dir.join(STATS_FILE)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        tracing::debug!(error = %e, "cannot save the shared cache tier's counters");
    }
}

/// The counters the running server saved last, if any.
pub fn load_stats(cache_dir: &Path) -> Option<SharedStats> {
    let bytes = std::fs::read(cache_dir.join(STATS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn credential_error(what: String) -> StartError {
    StartError::Shared(what)
}

/// Reads `name = value` (or `name: value`) lines; `[section]` lines and
/// `#`/`;` comments are skipped, so an AWS credentials file with one
/// profile works as it is.
fn from_file(path: &Path) -> Result<Credentials, StartError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        credential_error(format!("reading credentials file {}: {e}", path.display()))
    })?;
    parse(&text).map_err(|missing| {
        credential_error(format!(
            "credentials file {} has no {missing}",
            path.display()
        ))
    })
}

fn parse(text: &str) -> Result<Credentials, &'static str> {
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';', '[']) {
            continue;
        }
        let Some((name, value)) = line.split_once(['=', ':']) else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match name.trim().trim_start_matches("aws_") {
            "access_key_id" => id = Some(value),
            "secret_access_key" => secret = Some(value),
            "session_token" => token = Some(value),
            _ => {}
        }
    }
    Ok(Credentials {
        access_key_id: id.ok_or("access_key_id")?,
        secret_access_key: secret.ok_or("secret_access_key")?,
        session_token: token,
    })
}

fn from_env() -> Result<Credentials, StartError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let missing = |name: &str| credential_error(format!("{name} is not set"));
    Ok(Credentials {
        access_key_id: var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")
            .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        session_token: var("AWS_SESSION_TOKEN"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_reads_plain_and_aws_names_and_never_shows_the_secret() {
        let creds =
            parse("[default]\n# x\naws_access_key_id = AKEXAMPLE\nsecret_access_key: s3cr3t\n")
                .unwrap();
        assert_eq!(creds.access_key_id, "AKEXAMPLE");
        assert_eq!(creds.secret_access_key, "s3cr3t");
        assert!(!format!("{creds:?}").contains("s3cr3t"));
        assert_eq!(
            parse("access_key_id = a\n").unwrap_err(),
            "secret_access_key"
        );
    }
}
