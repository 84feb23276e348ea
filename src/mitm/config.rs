//! The `caching:` section of the configuration: which domains are cached,
//! where the caching proxy listens, the CA that signs its certificates, the
//! disk cache, and what is injected into containers so that they use it.
//!
//! Raw (as serde reads it) → [`RawCaching::validate`] → [`CachingConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::raw::HumanDuration;

/// Where injected containers find the caching proxy's CA certificates as a
/// standalone PEM file.
pub const DEFAULT_CA_PATH: &str = "/etc/cistern/ca.pem";

/// `caching:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaching {
    /// Cached domains; each covers itself and its subdomains.
    pub domains: Vec<String>,
    /// Where CA keys and other state live (mode 0700). Default /var/lib/cistern.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The content-addressed cache directory. Default /var/cache/cistern.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub ca: RawCa,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub inject: RawInject,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    /// Lifetime of each CA. Default 24h.
    #[serde(default)]
    pub lifetime: Option<HumanDuration>,
    /// The longest a job container runs; a container's CA outlives it.
    /// Default 3h.
    #[serde(default)]
    pub max_job_duration: Option<HumanDuration>,
    /// `ecdsa-p256` (default), `ecdsa-p384` or `ed25519`.
    #[serde(default)]
    pub algorithm: Option<RawAlgorithm>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Plain-HTTP listen address. Default 0.0.0.0:80.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// HTTPS listen address. Default 0.0.0.0:443.
    #[serde(default)]
    pub https: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    /// What the cached domains resolve to inside containers: an IP address,
    /// or `host-gateway` (default: the daemon's host gateway).
    #[serde(default)]
    pub address: Option<String>,
    /// `NAME=VALUE` entries added to every injected container's environment,
    /// for runtimes that ignore the system trust store. Default:
    /// `NODE_EXTRA_CA_CERTS=/etc/cistern/ca.pem`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Image patterns (`*` and `?` globs, matched against `Image` as the client
    /// wrote it) whose containers get no injection.
    #[serde(default)]
    pub skip_images: Vec<String>,
    /// What to do when the CA cannot be installed in a container. Default `skip`.
    #[serde(default)]
    pub on_failure: Option<InjectFailure>,
}

/// `caching.inject.on_failure`: what happens to a container whose trust stores
/// cistern could not write (read-only root filesystem, ...). Either way no
/// half-injected container is left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectFailure {
    /// Remove it, create it again without any caching injection, and log it.
    #[default]
    Skip,
    /// Remove it and answer the create with an error.
    Refuse,
}

/// The validated `caching:` section.
#[derive(Debug, Clone)]
pub struct CachingConfig {
    pub domains: Vec<String>,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub ca_lifetime: Duration,
    pub max_job_duration: Duration,
    pub algorithm: cistern_ca::KeyAlgorithm,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The address `ExtraHosts` entries point at (`host-gateway` or an IP).
    pub inject_address: String,
    /// `NAME=VALUE` entries injected into containers' environment.
    pub inject_env: Vec<String>,
    /// Image globs whose containers get no injection.
    pub inject_skip_images: Vec<String>,
    /// What happens when the CA cannot be installed in a container.
    pub inject_on_failure: InjectFailure,
}

impl RawCaching {
    /// Checks the section; the error names the offending key.
    pub fn validate(self) -> Result<CachingConfig, String> {
        if self.domains.is_empty() {
            return Err("domains: list at least one cached domain".into());
        }
        let algorithm = match self.ca.algorithm {
            None | Some(RawAlgorithm::EcdsaP256) => cistern_ca::KeyAlgorithm::EcdsaP256,
            Some(RawAlgorithm::EcdsaP384) => cistern_ca::KeyAlgorithm::EcdsaP384,
            Some(RawAlgorithm::Ed25519) => cistern_ca::KeyAlgorithm::Ed25519,
        };
        let inject_address = self.inject.address.unwrap_or_else(|| "host-gateway".into());
        if inject_address != "host-gateway" && inject_address.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "inject.address: `{inject_address}` is neither an IP address nor host-gateway"
            ));
        }
        let inject_env = self
            .inject
            .env
            .unwrap_or_else(|| vec![format!("NODE_EXTRA_CA_CERTS={DEFAULT_CA_PATH}")]);
        for (i, entry) in inject_env.iter().enumerate() {
            match entry.split_once('=') {
                Some((name, _)) if !name.is_empty() && !name.contains(char::is_whitespace) => {}
                _ => return Err(format!("inject.env[{i}]: `{entry}` is not NAME=VALUE")),
            }
        }
        if let Some(i) = self.inject.skip_images.iter().position(String::is_empty) {
            return Err(format!("inject.skip_images[{i}]: empty pattern"));
        }
        let config = CachingConfig {
            inject_env,
            inject_skip_images: self.inject.skip_images,
            inject_on_failure: self.inject.on_failure.unwrap_or_default(),
            domains: self.domains,
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/cistern")),
            cache_dir: self
                .cache_dir
                .unwrap_or_else(|| PathBuf::from("/var/cache/cistern")),
            ca_lifetime: self
                .ca
                .lifetime
                .map_or(Duration::from_secs(24 * 3600), |d| d.0),
            max_job_duration: self
                .ca
                .max_job_duration
                .map_or(Duration::from_secs(3 * 3600), |d| d.0),
            algorithm,
            http: self
                .proxy
                .http
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 80))),
            https: self
                .proxy
                .https
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 443))),
            inject_address,
        };
        // The CA crate checks domains and durations itself.
        config.ca_config().map_err(|err| format!("{err}"))?;
        Ok(config)
    }
}

impl CachingConfig {
    /// The CA crate's configuration for these settings.
    pub fn ca_config(&self) -> Result<cistern_ca::CaConfig, cistern_ca::Error> {
        let margin = Duration::from_secs(600).min(self.ca_lifetime / 10);
        cistern_ca::CaConfig::new(self.state_dir.join("ca"), &self.domains)?
            .with_algorithm(self.algorithm)
            .with_durations(self.ca_lifetime, self.max_job_duration, margin)
            .validate()
    }
}
