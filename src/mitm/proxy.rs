//! Starting the caching proxy: bind its HTTP and HTTPS listeners (and the
//! forward proxy's, when configured), open the disk cache, build
//! the origin client, and serve the listeners with the serve layer
//! ([`crate::listen::serve`]) until the shutdown token fires. The HTTP,
//! HTTPS and forward listeners serve HTTP/1.1, and HTTP/2 chosen by ALPN or
//! the h2 preface.
//!
//! Everything runs on the caller's [`TaskTracker`], so cistern's drain
//! waits for requests (and cache writes) under way, up to its grace period.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cistern_cache::{Cache, Policy, PolicyConfig, Rules, Shared, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{ListenerInfo, Scheme};
use super::error::StartError;
use super::forward::ForwardProxy;
use super::handler::Proxy;
use super::metrics::Metrics;
use super::tls::{server_config, LeafResolver};
use super::{upstream, Caching, CachingConfig};
use crate::listen::serve::{self, Listener, Protocol, Socket, Tls};

/// How often counters are logged (when they changed) and access times saved.
const LOG_PERIOD: Duration = Duration::from_secs(60);
/// How often the cache directory is checked for changes made by `cistern
/// cache` commands in another process.
const CHANGE_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// How long shutdown waits for queued uploads to the shared tier.
const SHARED_DRAIN: Duration = Duration::from_secs(10);

/// Opens the cache store described by the configuration.
pub async fn open_cache(config: &CachingConfig) -> Result<Cache, StartError> {
    let store = Store::open(
        &config.cache_dir,
        StoreConfig {
            max_bytes: config.max_size,
            max_object: config.max_object,
            lock_timeout: config.lock_timeout,
            verify_before_serve: config.verify_before_serve,
            memory_size: config.memory,
            memory_max_object: config.memory_max_object,
            map_reads: config.map_reads,
        },
    )
    .await
    .map_err(StartError::Cache)?;
    let shared = match &config.shared {
        Some(settings) => {
            let shared = super::shared::shared_config(settings, &config.extra_roots)?;
            let shared = Shared::open(&shared, &config.cache_dir)
                .map_err(|e| StartError::Shared(crate::http::error::chain(&e)))?;
            tracing::info!(
                endpoint = settings.endpoint.as_deref().unwrap_or("aws"),
                bucket = %settings.bucket,
                prefix = %settings.prefix,
                "shared cache tier on"
            );
            Some(shared)
        }
        None => None,
    };
    let rules = Rules::new(&config.rules).map_err(StartError::Cache)?;
    let policy = Policy::new(PolicyConfig {
        rules,
        immutable_ttl: config.immutable_ttl,
        stale_if_error: config.stale_if_error,
        unvalidated_window: config.unvalidated_window,
    });
    let cache = Cache::new(store, policy);
    Ok(match shared {
        Some(shared) => cache.with_shared(shared),
        None => cache,
    })
}

async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            what,
            address,
            source,
        })
}

/// What a running caching proxy shows the admin listener: its cache and
/// its counters.
#[derive(Clone)]
pub struct Running {
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
}

/// Binds and starts the caching proxy on `http` and `https` (see
/// [`super::address::listen_addresses`]). Returns once it is listening.
pub async fn start(
    caching: Arc<Caching>,
    (http_at, https_at): (SocketAddr, SocketAddr),
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let config = &caching.config;
    let http = bind("http", http_at).await?;
    let https = bind("https", https_at).await?;
    let forward = match &config.forward_proxy {
        Some(f) => Some(bind("forward proxy", f.listen).await?),
        None => None,
    };
    let cache = open_cache(config).await?;
    let origin = upstream::client(
        &config.extra_roots,
        &config.overrides,
        config.connect_timeout,
    )?;
    let tls = TlsAcceptor::from(server_config(LeafResolver::new(
        caching.ca.clone(),
        caching.set.clone(),
    ))?);
    let metrics = Arc::new(Metrics::new(caching.set.domains().iter()));
    let proxy = Arc::new(Proxy::new(
        caching.set.clone(),
        cache,
        origin,
        metrics.clone(),
        tasks.clone(),
        config.idle_timeout,
        config.max_connections_per_client,
    ));
    let idle = config.idle_timeout;
    let cached = |name: &'static str, listener: TcpListener| {
        Listener::new(name, Socket::Tcp(listener), idle)
            .protocol(Protocol::Auto)
            .quiet_handshakes()
    };
    if let (Some(listener), Some(f)) = (forward, &config.forward_proxy) {
        let forward = Arc::new(ForwardProxy::new(
            proxy.clone(),
            tls.clone(),
            upstream::Dialer::new(&config.overrides),
            f,
            tasks.clone(),
            shutdown.clone(),
        ));
        tracing::info!(listen = %f.listen, others = ?f.others, "forward proxy listening");
        let listener = cached("forward", listener);
        tasks.spawn(serve::run(
            listener,
            forward,
            (),
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(
        http = %http_at,
        https = %https_at,
        cache_dir = %config.cache_dir.display(),
        domains = ?config.domains,
        "caching proxy listening"
    );
    let site = |name, scheme| ListenerInfo { name, scheme };
    tasks.spawn(serve::run(
        cached("http", http),
        proxy.clone(),
        site("http", Scheme::Http),
        tasks.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(serve::run(
        cached("https", https).tls(Some(Tls::Fixed(tls))),
        proxy.clone(),
        site("https", Scheme::Https),
        tasks.clone(),
        shutdown.clone(),
    ));
    let running = Running {
        cache: proxy.cache().clone(),
        metrics: metrics.clone(),
    };
    tasks.spawn(housekeeping(proxy, metrics, shutdown));
    Ok(running)
}

/// Logs counters that changed and saves LRU access times, every minute
/// and at shutdown; saves the shared tier's counters for `cistern cache
/// stats` when they change (and lets its uploads finish at shutdown);
/// picks up what `cistern cache purge`/`verify` changed
/// in the cache directory within seconds.
async fn housekeeping(proxy: Arc<Proxy>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut last = BTreeMap::new();
    let mut last_shared = None;
    let mut next_log = tokio::time::Instant::now() + LOG_PERIOD;
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(CHANGE_CHECK_PERIOD) => false,
        };
        match proxy.cache().store().reload_if_changed().await {
            Ok(true) => tracing::info!("cache changed by a cistern cache command; index reloaded"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "cannot reload the cache index"),
        }
        if let Some(shared) = proxy.cache().shared() {
            if stop && !shared.drain(SHARED_DRAIN).await {
                tracing::warn!("shared cache tier uploads still queued at shutdown; dropped");
            }
            let stats = shared.stats();
            if last_shared.as_ref() != Some(&stats) {
                super::shared::save_stats(proxy.cache().store().dir(), &stats).await;
                last_shared = Some(stats);
            }
        }
        if !stop && tokio::time::Instant::now() < next_log {
            continue;
        }
        next_log = tokio::time::Instant::now() + LOG_PERIOD;
        last = metrics.log_changes(&last);
        if let Err(err) = proxy.cache().store().flush().await {
            tracing::warn!(error = %err, "cannot save cache access times");
        }
        if stop {
            return;
        }
    }
}
