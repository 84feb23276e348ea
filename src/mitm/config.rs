//! The `caching:` section of the configuration: which domains are cached,
//! where the caching proxy listens, the CA that signs its certificates, the
//! disk cache, and what is injected into containers so that they use it.
//!
//! Raw (as serde reads it) → [`RawCaching::validate`] → [`CachingConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cistern_cache::RuleConfig;

use serde::Deserialize;

use crate::units::{ByteSize, HumanDuration, Timeout};

/// Where injected containers find the caching proxy's CA certificates as a
/// standalone PEM file.
pub const DEFAULT_CA_PATH: &str = "/etc/cistern/ca.pem";

/// `caching:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaching {
    /// Cached domains; each covers itself and its subdomains. Default: none
    /// besides what `discover` finds.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Which repository hosts cistern finds by itself.
    #[serde(default)]
    pub discover: RawDiscover,
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
    /// The disk cache: size limit, rules, stale-if-error.
    #[serde(default)]
    pub cache: RawCache,
    /// How the proxy reaches origins.
    #[serde(default)]
    pub upstream: RawOriginUpstream,
    /// Moved to the top-level `admin:` (the admin listener is cistern's,
    /// not the caching proxy's): named here only to say so.
    #[serde(default)]
    pub admin: Option<serde::de::IgnoredAny>,
    /// An explicit forward proxy for clients that set `http_proxy` /
    /// `https_proxy`. Default: off.
    #[serde(default)]
    pub forward_proxy: Option<RawForwardProxy>,
}

/// `caching.discover`: learning the hosts package managers download from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscover {
    /// Read the host's package-manager configuration at start. Default true.
    #[serde(default)]
    pub host: Option<bool>,
    /// Read each image a container is created from (and the create's
    /// environment). Default true.
    #[serde(default)]
    pub images: Option<bool>,
    /// Host-name globs a learned host must match (`*.example.test`). Default:
    /// any.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Host-name globs no learned host may match. Default: none.
    #[serde(default)]
    pub deny: Vec<String>,
    /// At most this many learned hosts join the cached set. Default 64.
    #[serde(default)]
    pub max_hosts: Option<usize>,
}

/// The validated `caching.discover`.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    pub host: bool,
    pub images: bool,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub max_hosts: usize,
}

/// Default of `caching.discover.max_hosts`.
pub const DEFAULT_MAX_LEARNED_HOSTS: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardProxy {
    /// Where it listens. Default 127.0.0.1:3128.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// What happens to requests and CONNECTs for hosts that are not cached
    /// domains. Default `refuse`.
    #[serde(default)]
    pub others: Option<Others>,
}

/// `caching.forward_proxy.others`: the forward proxy's answer to hosts
/// outside the cached domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Others {
    /// 403: never a proxy for anything but the cached domains.
    #[default]
    Refuse,
    /// CONNECT is tunnelled as bytes; plain-HTTP requests are forwarded
    /// uncached.
    Tunnel,
}

/// The validated `caching.forward_proxy`.
#[derive(Debug, Clone, Copy)]
pub struct ForwardProxyConfig {
    pub listen: SocketAddr,
    pub others: Others,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Size limit of the cache's content (`50GiB`, `500MB`, bytes). Default: none.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Largest body stored; larger ones are passed through from the origin
    /// uncached. Default: a quarter of `max_size` (none without it).
    #[serde(default)]
    pub max_object: Option<ByteSize>,
    /// Per-domain/path rules, before the built-in package-repository ones.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Freshness of `immutable` entries. Default 365 days.
    #[serde(default)]
    pub immutable_ttl: Option<HumanDuration>,
    /// Serve a stored entry that went stale at most this long ago when the
    /// origin fails. Default: off.
    #[serde(default)]
    pub stale_if_error: Option<HumanDuration>,
    /// An always-revalidate index whose origin sends no `ETag` and no
    /// `Last-Modified` is served without asking the origin while it was
    /// downloaded less than this long ago (asking could only download it
    /// whole again). `0s` turns it off. Default 10s.
    #[serde(default)]
    pub unvalidated_window: Option<HumanDuration>,
    /// How long concurrent misses wait for the one fetch in flight to start
    /// (then they read along with it), and for it to make progress. Default
    /// 60s.
    #[serde(default)]
    pub lock_timeout: Option<HumanDuration>,
    /// Stored bodies up to this size are read and checked whole before they
    /// are served, so a corrupt one is refetched without the client
    /// noticing. Larger ones stream in blocks, each checked before it is
    /// sent, and a corrupt block breaks the client's transfer there.
    /// Default 256KiB.
    #[serde(default)]
    pub verify_before_serve: Option<ByteSize>,
    /// Memory for stored bodies served again and again: once a body up to
    /// `memory_max_object` was read from disk and matched its hashes, its
    /// repeats are sent from memory. `0` turns it off. Default 256MiB.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Largest body kept in memory. Default 4MiB.
    #[serde(default)]
    pub memory_max_object: Option<ByteSize>,
    /// Stream large stored bodies from memory maps of their files instead
    /// of copying them into buffers first. Turn off for a cache directory
    /// on a network filesystem. Default true.
    #[serde(default)]
    pub map_reads: Option<bool>,
    /// A second tier on S3-compatible object storage, shared by a fleet of
    /// runners. Default: none.
    #[serde(default)]
    pub shared: Option<RawShared>,
}

/// `caching.cache.shared`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    /// S3 endpoint URL; default: AWS S3 for `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket (required).
    #[serde(default)]
    pub bucket: String,
    /// Region. Default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Prefix of every object name. Default `cistern`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Where the credentials are read from: exactly one of `file` and `env`.
    #[serde(default)]
    pub credentials: RawSharedCredentials,
    /// Uploads waiting at most. Default 256.
    #[serde(default)]
    pub upload_queue: Option<usize>,
    /// Longest wait for the store before the origin is asked. Default 2s.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// A hit rewrites its key's index object (recording a use, for gc) when
    /// it was last written longer ago than this. Default 1d.
    #[serde(default)]
    pub touch_every: Option<HumanDuration>,
}

/// `caching.cache.shared.credentials`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedCredentials {
    /// A file of `access_key_id = …`, `secret_access_key = …` and optional
    /// `session_token = …` lines (an AWS credentials file's `aws_` names
    /// too).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `true`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` from cistern's environment.
    #[serde(default)]
    pub env: Option<bool>,
}

/// The validated `caching.cache.shared` section. Credentials are read when
/// the cache opens (see `shared.rs`), never kept in the configuration.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub prefix: String,
    pub credentials: CredentialSource,
    pub upload_queue: usize,
    pub timeout: Duration,
    pub touch_every: Duration,
}

/// Where the shared tier's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A credentials file.
    File(PathBuf),
    /// The standard `AWS_*` variables of cistern's environment.
    Env,
}

impl RawShared {
    fn validate(self) -> Result<SharedSettings, String> {
        if self.bucket.is_empty() {
            return Err("cache.shared.bucket: required".into());
        }
        if let Some(endpoint) = &self.endpoint {
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                return Err(format!(
                    "cache.shared.endpoint: `{endpoint}` is not an http:// or https:// URL"
                ));
            }
        }
        let credentials = match (self.credentials.file, self.credentials.env) {
            (Some(file), None | Some(false)) if file.is_absolute() => CredentialSource::File(file),
            (Some(file), None | Some(false)) => {
                return Err(format!(
                    "cache.shared.credentials.file: `{}` must be an absolute path",
                    file.display()
                ))
            }
            (None, Some(true)) => CredentialSource::Env,
            _ => {
                return Err(
                    "cache.shared.credentials: set exactly one of `file` and `env: true`".into(),
                )
            }
        };
        let upload_queue = self
            .upload_queue
            .unwrap_or(cistern_cache::shared::DEFAULT_UPLOAD_QUEUE);
        if upload_queue == 0 {
            return Err("cache.shared.upload_queue: must be at least 1".into());
        }
        Ok(SharedSettings {
            endpoint: self.endpoint,
            bucket: self.bucket,
            region: self.region.unwrap_or_else(|| "us-east-1".into()),
            prefix: self
                .prefix
                .unwrap_or_else(|| "cistern".into())
                .trim_matches('/')
                .to_owned(),
            credentials,
            upload_queue,
            timeout: self
                .timeout
                .map_or(cistern_cache::shared::DEFAULT_TIMEOUT, |d| d.0),
            touch_every: self
                .touch_every
                .map_or(cistern_cache::shared::DEFAULT_TOUCH_EVERY, |d| d.0),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOriginUpstream {
    /// PEM files of CAs trusted for origins besides the system's.
    #[serde(default)]
    pub extra_roots: Vec<PathBuf>,
    /// Static name → `IP:PORT` resolution, before the system resolver.
    #[serde(default)]
    pub overrides: BTreeMap<String, SocketAddr>,
    /// TCP + TLS connect timeout. Default 10s.
    #[serde(default)]
    pub connect_timeout: Option<HumanDuration>,
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
    /// Plain-HTTP listen address. Default: port 80 on the address
    /// containers reach (see [`CachingConfig::http`]).
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// HTTPS listen address. Default: port 443 on the address containers
    /// reach.
    #[serde(default)]
    pub https: Option<SocketAddr>,
    /// How long a client connection may take to send a request's head,
    /// and may sit idle between requests, before it is closed. Default 60s.
    #[serde(default)]
    pub idle_timeout: Option<Timeout>,
    /// Connections one client address may hold open at once; more are
    /// closed as they arrive. Default 256.
    #[serde(default)]
    pub max_connections_per_client: Option<std::num::NonZeroUsize>,
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
    /// Also point the cached domains at the proxy in image builds (the
    /// `extrahosts` of `POST /build`). Off by default: the build's own
    /// containers cannot be given the CA, so HTTPS downloads from cached
    /// domains in a Dockerfile would fail verification. Turn it on when builds
    /// fetch cached domains over plain HTTP only.
    #[serde(default)]
    pub builds: bool,
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
    /// The cached domains: the configured ones, and after
    /// [`CachingConfig::learn_at_start`] the learned ones too.
    pub domains: Vec<String>,
    /// How hosts are learned.
    pub discover: DiscoverConfig,
    /// What [`CachingConfig::learn_at_start`] added (empty before).
    pub learned: super::domains::Learned,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub ca_lifetime: Duration,
    pub max_job_duration: Duration,
    pub algorithm: cistern_ca::KeyAlgorithm,
    /// Plain-HTTP listen address; `None`: port 80 on the address containers
    /// reach, `inject.address` (`host-gateway` is asked of the daemon when
    /// the proxy starts, see `address::listen_addresses`).
    pub http: Option<SocketAddr>,
    /// HTTPS listen address; `None`: port 443 on the address containers reach.
    pub https: Option<SocketAddr>,
    /// Client connections idle (or sending a request head) this long are
    /// closed.
    pub idle_timeout: Duration,
    /// Connections one client address may hold open at once.
    pub max_connections_per_client: usize,
    /// The address `ExtraHosts` entries point at (`host-gateway` or an IP).
    pub inject_address: String,
    /// `NAME=VALUE` entries injected into containers' environment.
    pub inject_env: Vec<String>,
    /// Image globs whose containers get no injection.
    pub inject_skip_images: Vec<String>,
    /// What happens when the CA cannot be installed in a container.
    pub inject_on_failure: InjectFailure,
    /// Whether builds get the extra hosts too (`caching.inject.builds`).
    pub inject_builds: bool,
    /// Cache content size limit in bytes.
    pub max_size: Option<u64>,
    /// Largest body stored, in bytes.
    pub max_object: Option<u64>,
    /// Configured rules (the built-in defaults follow them).
    pub rules: Vec<RuleConfig>,
    /// Freshness of `immutable` entries.
    pub immutable_ttl: Duration,
    /// Stale-if-error window; `None`: off.
    pub stale_if_error: Option<Duration>,
    /// How long an index without validators is served without asking the
    /// origin; zero: off.
    pub unvalidated_window: Duration,
    /// Single-flight wait.
    pub lock_timeout: Duration,
    /// Bodies up to this size are checked whole before they are served.
    pub verify_before_serve: u64,
    /// Memory for verified hot bodies; 0: none.
    pub memory: u64,
    /// Largest body kept in memory.
    pub memory_max_object: u64,
    /// Large bodies are streamed from memory maps.
    pub map_reads: bool,
    /// The shared tier; `None`: off.
    pub shared: Option<SharedSettings>,
    /// Extra origin trust roots (PEM files).
    pub extra_roots: Vec<PathBuf>,
    /// Static resolution of origin names.
    pub overrides: BTreeMap<String, SocketAddr>,
    /// Origin connect timeout (TCP and TLS).
    pub connect_timeout: Duration,
    /// The explicit forward proxy; `None`: off.
    pub forward_proxy: Option<ForwardProxyConfig>,
}

impl RawCaching {
    /// Checks the section; the error names the offending key.
    pub fn validate(self) -> Result<CachingConfig, String> {
        let discover = DiscoverConfig {
            host: self.discover.host.unwrap_or(true),
            images: self.discover.images.unwrap_or(true),
            allow: self.discover.allow,
            deny: self.discover.deny,
            max_hosts: self.discover.max_hosts.unwrap_or(DEFAULT_MAX_LEARNED_HOSTS),
        };
        if self.domains.is_empty() && !discover.host && !discover.images {
            return Err(
                "domains: list at least one cached domain (or turn on discover.host or discover.images)"
                    .into(),
            );
        }
        for (key, globs) in [("allow", &discover.allow), ("deny", &discover.deny)] {
            if let Some(i) = globs.iter().position(|g| g.trim().is_empty()) {
                return Err(format!("discover.{key}[{i}]: empty pattern"));
            }
        }
        if self.admin.is_some() {
            return Err(
                "admin: moved to the top level: `admin:` beside `caching:` (it serves \
                 whether or not caching is on)"
                    .into(),
            );
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
            inject_builds: self.inject.builds,
            inject_skip_images: self.inject.skip_images,
            inject_on_failure: self.inject.on_failure.unwrap_or_default(),
            domains: self.domains,
            discover,
            learned: Default::default(),
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
            http: self.proxy.http,
            https: self.proxy.https,
            idle_timeout: self
                .proxy
                .idle_timeout
                .map_or(Duration::from_secs(60), |d| d.0),
            max_connections_per_client: self
                .proxy
                .max_connections_per_client
                .map_or(256, |n| n.get()),
            inject_address,
            max_size: self.cache.max_size.map(|s| s.0),
            max_object: self
                .cache
                .max_object
                .map(|s| s.0)
                .or_else(|| self.cache.max_size.map(|s| s.0 / 4)),
            rules: self.cache.rules,
            immutable_ttl: self
                .cache
                .immutable_ttl
                .map_or(cistern_cache::policy::DEFAULT_IMMUTABLE_TTL, |d| d.0),
            stale_if_error: self.cache.stale_if_error.map(|d| d.0),
            unvalidated_window: self
                .cache
                .unvalidated_window
                .map_or(cistern_cache::policy::DEFAULT_UNVALIDATED_WINDOW, |d| d.0),
            lock_timeout: self
                .cache
                .lock_timeout
                .map_or(Duration::from_secs(60), |d| d.0),
            verify_before_serve: self
                .cache
                .verify_before_serve
                .map_or(cistern_cache::DEFAULT_VERIFY_BEFORE_SERVE, |s| s.0),
            memory: self
                .cache
                .memory
                .map_or(cistern_cache::DEFAULT_MEMORY_SIZE, |s| s.0),
            memory_max_object: self
                .cache
                .memory_max_object
                .map_or(cistern_cache::DEFAULT_MEMORY_MAX_OBJECT, |s| s.0),
            map_reads: self.cache.map_reads.unwrap_or(true),
            shared: self.cache.shared.map(RawShared::validate).transpose()?,
            extra_roots: self.upstream.extra_roots,
            overrides: self
                .upstream
                .overrides
                .into_iter()
                .map(|(name, addr)| (name.trim_end_matches('.').to_ascii_lowercase(), addr))
                .collect(),
            connect_timeout: self
                .upstream
                .connect_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            forward_proxy: self.forward_proxy.map(|f| ForwardProxyConfig {
                listen: f
                    .listen
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3128))),
                others: f.others.unwrap_or_default(),
            }),
        };
        if let Err(err) = cistern_cache::Rules::new(&config.rules) {
            return Err(format!("cache.rules: {err}"));
        }
        for root in &config.extra_roots {
            if !root.is_absolute() {
                return Err(format!(
                    "upstream.extra_roots: `{}` must be an absolute path",
                    root.display()
                ));
            }
        }
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
