//! Starting the caching proxy: bind its HTTP, HTTPS and admin listeners
//! (and the forward proxy's, when configured),
//! open the disk cache, build the origin client, and run the accept loops
//! until the shutdown token fires. Connections are served with hyper-util's
//! auto server (HTTP/1.1, and HTTP/2 chosen by ALPN or the h2 preface).
//!
//! Everything runs on the caller's [`TaskTracker`], so cistern's drain
//! waits for requests (and cache writes) under way, up to its grace period.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cistern_cache::{Cache, Policy, PolicyConfig, Rules, Store, StoreConfig};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::Metered;
use super::domains::Domains;
use super::error::StartError;
use super::forward::{self, ForwardProxy};
use super::handler::{ConnInfo, Proxy, Scheme};
use super::metrics::Metrics;
use super::plain::PlainStream;
use super::tls::{server_config, LeafResolver};
use super::{upstream, Caching, CachingConfig};

/// How long an HTTP/2 client may take to answer a keep-alive ping.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a client may take to finish its TLS handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often counters are logged (when they changed) and access times saved.
const LOG_PERIOD: Duration = Duration::from_secs(60);
/// How often the cache directory is checked for changes made by `cistern
/// cache` commands in another process.
const CHANGE_CHECK_PERIOD: Duration = Duration::from_secs(2);

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
    let rules = Rules::new(&config.rules).map_err(StartError::Cache)?;
    let policy = Policy::new(PolicyConfig {
        rules,
        immutable_ttl: config.immutable_ttl,
        stale_if_error: config.stale_if_error,
    });
    Ok(Cache::new(store, policy))
}

pub(super) async fn bind(
    what: &'static str,
    address: SocketAddr,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            what,
            address,
            source,
        })
}

/// Binds and starts the caching proxy on `http` and `https` (see
/// [`super::address::listen_addresses`]). Returns once it is listening.
pub async fn start(
    caching: Arc<Caching>,
    (http_at, https_at): (SocketAddr, SocketAddr),
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let config = &caching.config;
    let http = bind("http", http_at).await?;
    let https = bind("https", https_at).await?;
    let admin = bind("admin", config.admin).await?;
    let forward = match &config.forward_proxy {
        Some(f) => Some(forward::bind(f.listen).await?),
        None => None,
    };
    let domains = Domains::new(&config.domains);
    let cache = open_cache(config).await?;
    let origin = upstream::client(
        &config.extra_roots,
        &config.overrides,
        config.connect_timeout,
    )?;
    let tls = TlsAcceptor::from(server_config(LeafResolver::new(
        caching.ca.clone(),
        domains.clone(),
    ))?);
    let metrics = Arc::new(Metrics::new(domains.iter()));
    let proxy = Arc::new(Proxy::new(
        domains,
        cache,
        origin,
        metrics.clone(),
        tasks.clone(),
        config.idle_timeout,
        config.max_connections_per_client,
    ));
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
        tasks.spawn(forward.run(listener));
    }
    tracing::info!(
        http = %http_at,
        https = %https_at,
        admin = %config.admin,
        cache_dir = %config.cache_dir.display(),
        domains = ?config.domains,
        "caching proxy listening"
    );
    tasks.spawn(accept_loop(
        http,
        None,
        proxy.clone(),
        tasks.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(accept_loop(
        https,
        Some(tls),
        proxy.clone(),
        tasks.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(admin_loop(
        admin,
        proxy.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(housekeeping(proxy, metrics, shutdown));
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let name = if tls.is_some() { "https" } else { "http" };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                tracing::warn!(listener = name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = proxy.admit(peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let conn = Arc::new(ConnInfo {
                        listener: "http",
                        scheme: Scheme::Http,
                        sni: None,
                        peer,
                    });
                    let idle = proxy.idle_timeout();
                    serve(
                        PlainStream::new(stream),
                        move |req| proxy.clone().handle(req, conn.clone()),
                        idle,
                        shutdown,
                    )
                    .await;
                }
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let sni = stream.get_ref().1.server_name().map(str::to_owned);
                    let conn = Arc::new(ConnInfo {
                        listener: "https",
                        scheme: Scheme::Https,
                        sni,
                        peer,
                    });
                    let idle = proxy.idle_timeout();
                    serve(
                        stream,
                        move |req| proxy.clone().handle(req, conn.clone()),
                        idle,
                        shutdown,
                    )
                    .await;
                }
            }
        });
    }
    tracing::debug!(listener = name, "caching proxy listener closed");
}

/// Serves one client connection (HTTP/1.1, with upgrades for the forward
/// proxy's CONNECT, or HTTP/2) with `handle` until it ends; at shutdown, lets
/// the requests under way finish.
///
/// An HTTP/1.1 connection that takes longer than `idle` to send a request's
/// head, or sits idle that long between requests, is closed, so clients
/// cannot hold connections (and file descriptors) open for ever. HTTP/2
/// connections are pinged every `idle` and closed when the peer stops
/// answering.
pub(super) async fn serve<IO, F, Fut>(
    io: IO,
    handle: F,
    idle: Duration,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Metered>, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle)
        .keep_alive_timeout(PING_TIMEOUT);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service_fn(handle));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "caching proxy connection ended with an error");
    }
}

/// The admin listener: `GET /metrics` (Prometheus text), `GET /healthz`.
async fn admin_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let proxy = proxy.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let text = match req.uri().path() {
                    "/metrics" => Some(metrics.render(&proxy.cache().store().stats())),
                    "/healthz" => Some("ok\n".to_owned()),
                    _ => None,
                };
                async move {
                    let mut res = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(text.clone().unwrap_or_else(|| "not found\n".into())),
                    ));
                    if text.is_none() {
                        *res.status_mut() = http::StatusCode::NOT_FOUND;
                    }
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Logs counters that changed and saves LRU access times, every minute
/// and at shutdown; picks up what `cistern cache purge`/`verify` changed
/// in the cache directory within seconds.
async fn housekeeping(proxy: Arc<Proxy>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut last = BTreeMap::new();
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
