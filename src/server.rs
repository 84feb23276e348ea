//! Runs cistern: binds every listener, starts the Docker proxy, the
//! caching proxy and the admin listener, serves until the shutdown token
//! fires, then drains. How a connection is accepted and served is the serve
//! layer's ([`crate::listen::serve`]); this is the wiring.
//!
//! Shutdown order: stop accepting and remove socket files at once (a client
//! never connects to a socket nobody serves), ask every connection to finish
//! its current request, wait up to the grace period for in-flight requests and
//! hijacked streams, then return.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerKind};
use crate::docker::{DockerProxy, ListenerInfo};
use crate::listen::serve::{Socket, Tls};
use crate::listen::tls::Reloadable;
use crate::listen::{self, ListenError};
use crate::mitm::Caching;

/// Why cistern could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("caching: CA: {0}")]
    Ca(#[source] cistern_ca::Error),
    #[error("caching proxy: {0}")]
    CachingProxy(#[source] crate::mitm::StartError),
}

/// One log line per learned host and per host left out.
fn log_learned(learned: &crate::mitm::domains::Learned) {
    for (host, places) in &learned.added {
        let from: Vec<String> = places
            .iter()
            .map(|f| format!("{} ({})", f.tool, f.from))
            .collect();
        tracing::info!(%host, from = %from.join(", "), "caching a learned repository host");
    }
    for (host, places) in &learned.routed {
        let from: Vec<String> = places
            .iter()
            .map(|f| format!("{} ({})", f.tool, f.from))
            .collect();
        tracing::info!(%host, from = %from.join(", "), "routing a learned repository host under a cached domain");
    }
    for (host, why) in &learned.left_out {
        tracing::debug!(%host, ?why, "learned repository host left out");
    }
}

/// How long removing `cleanup: true` tenants' resources may take on shutdown.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves until `shutdown` is cancelled, then drains for at most the
/// configured grace period.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    raise_open_files_limit();
    let mut bound = Vec::with_capacity(config.listeners.len());
    let mut tls_listeners = Vec::new();
    for listener in &config.listeners {
        let (socket, tls) = match &listener.kind {
            ListenerKind::Unix(cfg) => {
                (Socket::Unix(listen::bind_unix(&listener.name, cfg)?), None)
            }
            ListenerKind::Tcp(cfg) => {
                let tls = cfg.tls.as_ref().map(|tls| {
                    Arc::new(Reloadable::new(
                        tls.files.clone(),
                        tls.server_config.clone(),
                    ))
                });
                if let Some(tls) = &tls {
                    tls_listeners.push((listener.name.clone(), tls.clone()));
                }
                let socket = Socket::Tcp(listen::bind_tcp(&listener.name, cfg).await?);
                (socket, tls.map(Tls::Reloadable))
            }
        };
        bound.push((
            Arc::<str>::from(listener.name.as_str()),
            listener.policy.clone(),
            socket,
            tls,
        ));
    }

    let caching = match &config.caching {
        Some(cfg) => {
            let mut cfg = cfg.clone();
            log_learned(cfg.learn_at_start());
            if cfg.domains.is_empty() && !cfg.discover.images {
                // Nothing to cache, ever: the Docker side runs alone.
                tracing::warn!("caching is off: no domain is configured in caching.domains, no package manager on this host names a repository (see `cistern cache domains`), and discover.images is off");
                None
            } else {
                if cfg.domains.is_empty() {
                    tracing::info!("no repository host to cache yet: the first ones are learned from the images containers are created from");
                }
                let caching = Arc::new(Caching::open(cfg).map_err(ServeError::Ca)?);
                tokio::spawn(ca_maintenance(caching.clone(), shutdown.clone()));
                Some(caching)
            }
        }
        None => None,
    };

    let tasks = TaskTracker::new();
    let parts = crate::docker::Parts {
        upstream: config.upstream.clone(),
        policies: config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.policy.clone()))
            .collect(),
        ownership: crate::tenancy::ownership::Ownership::new(
            &config.instance,
            &config.state_dir,
            config
                .listeners
                .iter()
                .map(|l| {
                    let settings = crate::tenancy::ownership::ListenerOwnership {
                        identity: l.identity.clone(),
                        cleanup: l.cleanup,
                        namespaces: l.namespaces,
                    };
                    (l.name.clone(), settings)
                })
                .collect(),
        ),
        jobs: crate::tenancy::jobs::Jobs::new(
            config.jobs.clone(),
            &config.instance,
            &config.state_dir,
        ),
        inject: caching.clone().map(|c| {
            let off = config
                .listeners
                .iter()
                .filter(|l| !l.caching_inject)
                .map(|l| l.name.clone())
                .collect();
            let local_layers = matches!(
                config.upstream.endpoint,
                crate::config::UpstreamEndpoint::Unix(_)
            );
            crate::inject::Injector::new(c.handout(), off, local_layers)
        }),
        limits: config.clients,
    };
    let proxy = Arc::new(DockerProxy::new(parts, tasks.clone(), shutdown.clone()));
    // A crashed run's `cleanup: true` tenants: reaped before anyone connects,
    // or adopted.
    proxy
        .reconcile_orphans(config.orphans == crate::config::Orphans::Reap)
        .await;
    // Job containers: ended jobs cleaned up, live ones served again.
    tokio::spawn(proxy.clone().watch_jobs());
    let mut cache = None;
    if let Some(caching) = &caching {
        let bridge = match crate::mitm::address::needs_bridge(&caching.config) {
            true => Some(bridge_network(&config.upstream).await),
            false => None,
        };
        let addresses = crate::mitm::address::listen_addresses(&caching.config, bridge)
            .map_err(ServeError::CachingProxy)?;
        let running =
            crate::mitm::proxy::start(caching.clone(), addresses, tasks.clone(), shutdown.clone())
                .await
                .map_err(ServeError::CachingProxy)?;
        cache = Some((caching.clone(), running));
    }
    // The admin listener binds once everything it shows runs (so that it
    // answering means cistern is up), and before the Docker listeners
    // serve: a port in use still stops cistern before any client is served.
    if let Some(admin) = &config.admin {
        let socket = crate::admin::bind(admin).await?;
        let parts = crate::admin::Parts {
            instance: config.instance.clone(),
            docker: proxy.clone(),
            caching: cache,
        };
        crate::admin::start(socket, parts, &tasks, shutdown.clone());
    }
    tokio::spawn(reload_on_sighup(tls_listeners, shutdown.clone()));
    let accept_loops = TaskTracker::new();
    for (name, policy, socket, tls) in bound {
        match &socket {
            Socket::Unix(s) => {
                tracing::info!(listener = %name, path = %s.path().display(), upstream = %config.upstream.endpoint, "listening")
            }
            Socket::Tcp(s) => {
                tracing::info!(listener = %name, address = ?s.local_addr().ok(), tls = tls.is_some(), upstream = %config.upstream.endpoint, "listening")
            }
        }
        let (limits, cap) = (&policy.limits, crate::policy::limits::cap_text);
        tracing::info!(listener = %name, policy = %policy.name, memory = %cap(&limits.memory), memory_swap = %cap(&limits.memory_swap), pids = %cap(&limits.pids), "resource caps");
        let build_caps = limits.memory.is_some();
        if build_caps && crate::policy::buildkit::enabled(&policy) {
            tracing::warn!(listener = %name, "BuildKit builds are allowed, and the daemon's BuildKit does not hold their RUN steps to the memory cap (classic builds are held to it): cap the daemon's cgroup on the host, or set groups: {{session: false}} to build with the classic builder");
        }
        let listener = ListenerInfo {
            name,
            policy,
            fixed: None,
        };
        accept_loops.spawn(proxy.clone().serve(listener, socket, tls, shutdown.clone()));
    }
    accept_loops.close();
    shutdown.cancelled().await;
    // Accept loops drop their listeners (and socket files) as they return.
    accept_loops.wait().await;

    tasks.close();
    let in_flight = tasks.len();
    tracing::info!(in_flight, grace = ?config.shutdown_grace, "shutting down: no longer accepting");
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            cut = tasks.len(),
            "grace period over: closing connections still in use"
        );
    }
    // Listeners marked `cleanup: true`: their tenants' resources go too.
    if tokio::time::timeout(CLEANUP_TIMEOUT, proxy.cleanup_on_shutdown())
        .await
        .is_err()
    {
        tracing::warn!("cleanup on shutdown did not finish in time");
    }
    Ok(())
}

/// On SIGHUP, reads every TLS listener's files again. A listener whose files
/// are wrong keeps serving the ones it had, and says so.
async fn reload_on_sighup(listeners: Vec<(String, Arc<Reloadable>)>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGHUP; TLS files are not reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangups.recv() => {}
        }
        tracing::info!(
            listeners = listeners.len(),
            "SIGHUP: reading TLS files again"
        );
        for (name, tls) in &listeners {
            match tls.reload() {
                Ok(()) => tracing::info!(listener = %name, "TLS files reloaded"),
                Err(err) => {
                    tracing::error!(listener = %name, field = err.field, error = %err, "TLS files not reloaded; still serving the previous ones")
                }
            }
        }
    }
}

/// Rotates CAs ahead of time and deletes expired ones.
async fn ca_maintenance(caching: Arc<Caching>, shutdown: CancellationToken) {
    // Often enough for lifetimes of minutes (tests use seconds).
    let period = (caching.config.ca_lifetime / 20)
        .clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match caching.ca.tick(time::OffsetDateTime::now_utc()) {
            Ok(report) => {
                if let Some(id) = report.rotated {
                    tracing::info!(ca = id.as_str(), "CA rotated");
                }
                for id in report.removed {
                    tracing::info!(ca = id.as_str(), "expired CA removed");
                }
                for id in report.adopted {
                    tracing::info!(ca = id.as_str(), "CA from `cistern ca rotate` in use");
                }
            }
            Err(err) => tracing::error!(error = %err, "CA maintenance failed"),
        }
    }
}

/// Raises the soft limit on open files to the hard one, as Go's runtime
/// (dockerd's) does. Every proxied connection holds two descriptors (the
/// client's and the daemon's or origin's), so the usual soft default of
/// 1024 is a few dozen busy jobs.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open files limit");
            return;
        }
    };
    // An unlimited hard limit is still capped by the kernel (`nr_open`,
    // 2^20 by default).
    let wanted = hard.min(1 << 20);
    if soft >= wanted {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
        Ok(()) => tracing::debug!(from = soft, to = wanted, "raised the open files limit"),
        Err(err) => tracing::warn!(error = %err, limit = soft, "cannot raise the open files limit"),
    }
}

/// The daemon's default bridge network (`GET /networks/bridge`), which says
/// where containers reach this host (for the caching proxy's addresses).
/// `cistern doctor` asks the same.
pub(crate) async fn bridge_network(
    upstream: &crate::daemon::upstream::Upstream,
) -> Result<serde_json::Value, crate::mitm::error::AddressError> {
    use crate::mitm::error::AddressError;
    let daemon = crate::daemon::upstream::client(upstream);
    let answer = crate::daemon::upstream::call(
        &daemon,
        http::Method::GET,
        "/networks/bridge",
        http::HeaderMap::new(),
        bytes::Bytes::new(),
        1 << 20,
    )
    .await
    .map_err(|err| AddressError::Daemon(err.to_string()))?;
    if !answer.status.is_success() {
        return Err(AddressError::Daemon(answer.message()));
    }
    serde_json::from_slice(&answer.body).map_err(|_| AddressError::BadInspect)
}
