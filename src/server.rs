//! Runs cistern: binds every listener, serves connections until the shutdown
//! token fires, then drains. On TLS listeners each connection's task first
//! completes the handshake, then serves HTTP/1.1 like any other connection.
//!
//! Shutdown order: stop accepting and remove socket files at once (a client
//! never connects to a socket nobody serves), ask every connection to finish
//! its current request, wait up to the grace period for in-flight requests and
//! hijacked streams, then return.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerKind};
use crate::docker::{ClientKey, ConnInfo, DockerProxy};
use crate::listen::tls::Reloadable;
use crate::listen::{self, ClientCert, ListenError, Peer, UnixSocket};
use crate::mitm::Caching;
use crate::policy::Policy;
use crate::tenancy::jobs::SocketConn;

/// A bound listener, ready to accept.
pub(crate) enum Bound {
    Unix(UnixSocket),
    Tcp(tokio::net::TcpListener, Option<Arc<Reloadable>>),
}

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection over a client's cap has to send the request it is
/// refused.
const REFUSED_TIMEOUT: Duration = Duration::from_secs(5);

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

/// How long removing `cleanup: true` tenants' resources may take on shutdown.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves until `shutdown` is cancelled, then drains for at most the
/// configured grace period.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    raise_open_files_limit();
    let mut bound = Vec::with_capacity(config.listeners.len());
    let mut tls_listeners = Vec::new();
    for listener in &config.listeners {
        let socket = match &listener.kind {
            ListenerKind::Unix(cfg) => Bound::Unix(listen::bind_unix(&listener.name, cfg)?),
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
                Bound::Tcp(listen::bind_tcp(&listener.name, cfg).await?, tls)
            }
        };
        bound.push((
            Arc::<str>::from(listener.name.as_str()),
            listener.policy.clone(),
            socket,
        ));
    }

    let caching = match &config.caching {
        Some(cfg) => {
            let caching = Arc::new(Caching::open(cfg.clone()).map_err(ServeError::Ca)?);
            tokio::spawn(ca_maintenance(caching.clone(), shutdown.clone()));
            Some(caching)
        }
        None => None,
    };

    let tasks = TaskTracker::new();
    let proxy = Arc::new(DockerProxy::new(
        &config,
        tasks.clone(),
        caching.clone(),
        shutdown.clone(),
    ));
    // A crashed run's `cleanup: true` tenants: reaped before anyone connects,
    // or adopted.
    proxy
        .reconcile_orphans(config.orphans == crate::config::Orphans::Reap)
        .await;
    // Job containers: ended jobs cleaned up, live ones served again.
    tokio::spawn(proxy.clone().watch_jobs());
    if let Some(caching) = &caching {
        let daemon = crate::docker::upstream::client(&config.upstream);
        let addresses = crate::mitm::address::listen_addresses(&caching.config, &daemon)
            .await
            .map_err(ServeError::CachingProxy)?;
        crate::mitm::proxy::start(caching.clone(), addresses, tasks.clone(), shutdown.clone())
            .await
            .map_err(ServeError::CachingProxy)?;
    }
    tokio::spawn(reload_on_sighup(tls_listeners, shutdown.clone()));
    let accept_loops = TaskTracker::new();
    for (name, policy, socket) in bound {
        match &socket {
            Bound::Unix(s) => {
                tracing::info!(listener = %name, path = %s.path().display(), upstream = %config.upstream.endpoint, "listening")
            }
            Bound::Tcp(s, tls) => {
                tracing::info!(listener = %name, address = ?s.local_addr().ok(), tls = tls.is_some(), upstream = %config.upstream.endpoint, "listening")
            }
        }
        let (limits, cap) = (&policy.limits, crate::policy::limits::cap_text);
        tracing::info!(listener = %name, policy = %policy.name, memory = %cap(&limits.memory), memory_swap = %cap(&limits.memory_swap), pids = %cap(&limits.pids), "resource caps");
        accept_loops.spawn(accept_loop(
            name,
            policy,
            None,
            socket,
            proxy.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
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

/// Accepts connections until `shutdown` fires; each is served as `name`'s,
/// with `policy`, and as the fixed tenant on a job's or a container's socket.
pub(crate) async fn accept_loop(
    name: Arc<str>,
    policy: Arc<Policy>,
    fixed: Option<Arc<SocketConn>>,
    socket: Bound,
    proxy: Arc<DockerProxy>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let path: Option<Arc<std::path::Path>> = match &socket {
        Bound::Unix(s) => Some(Arc::from(s.path())),
        Bound::Tcp(..) => None,
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&socket) => accepted,
        };
        // Each connection takes a place among its client's; one over the
        // cap is answered 429 (`None`).
        let conn = |peer: Peer| {
            let client = match &peer {
                Peer::Tcp(addr) | Peer::Tls { addr, .. } => ClientKey::Ip(addr.ip()),
                Peer::Unix { uid, .. } => ClientKey::Unix {
                    socket: path.clone(),
                    uid: Some(*uid),
                },
                Peer::Unknown => ClientKey::Unix {
                    socket: path.clone(),
                    uid: None,
                },
            };
            Arc::new(ConnInfo {
                listener: name.clone(),
                slot: proxy.admit(client).map(Arc::new),
                peer,
                policy: policy.clone(),
                fixed: fixed.clone(),
                socket: path.clone(),
            })
        };
        match accepted {
            Ok(Accepted::Unix(stream, peer)) => {
                tasks.spawn(serve_connection(
                    stream,
                    conn(peer),
                    proxy.clone(),
                    shutdown.clone(),
                ));
            }
            Ok(Accepted::Tcp(stream, addr, None)) => {
                let _ = stream.set_nodelay(true);
                tasks.spawn(serve_connection(
                    stream,
                    conn(Peer::Tcp(addr)),
                    proxy.clone(),
                    shutdown.clone(),
                ));
            }
            Ok(Accepted::Tcp(stream, addr, Some(acceptor))) => {
                let _ = stream.set_nodelay(true);
                // The handshake runs in the connection's task: a slow client
                // never holds up the accept loop.
                tasks.spawn(serve_tls(
                    acceptor,
                    stream,
                    addr,
                    conn(Peer::Tcp(addr)),
                    proxy.clone(),
                    shutdown.clone(),
                ));
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(socket);
    tracing::debug!(listener = %name, "listener closed");
}

enum Accepted {
    Unix(tokio::net::UnixStream, Peer),
    /// With the acceptor when the listener speaks TLS.
    Tcp(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        Option<TlsAcceptor>,
    ),
}

async fn accept(socket: &Bound) -> std::io::Result<Accepted> {
    match socket {
        Bound::Unix(s) => {
            let (stream, _) = s.listener.accept().await?;
            let peer = match stream.peer_cred() {
                Ok(cred) => Peer::Unix {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                },
                Err(_) => Peer::Unknown,
            };
            Ok(Accepted::Unix(stream, peer))
        }
        Bound::Tcp(l, tls) => {
            let (stream, addr) = l.accept().await?;
            let acceptor = tls.as_ref().map(|tls| TlsAcceptor::from(tls.current()));
            Ok(Accepted::Tcp(stream, addr, acceptor))
        }
    }
}

/// Completes a TLS handshake (at most [`HANDSHAKE_TIMEOUT`], abandoned on
/// shutdown), then serves the connection as `conn`'s, with the client
/// certificate rustls verified, if any, in its [`Peer`]. A failed handshake
/// is logged and the connection dropped: nothing reaches the Docker proxy.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    conn: Arc<ConnInfo>,
    proxy: Arc<DockerProxy>,
    shutdown: CancellationToken,
) {
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(listener = %conn.listener, peer = %addr, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(listener = %conn.listener, peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    // rustls verified the chain; the first certificate is the client's own.
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| ClientCert::from_der(der))
        .map(Arc::new);
    let conn = Arc::new(ConnInfo {
        peer: Peer::Tls { addr, client },
        ..(*conn).clone()
    });
    serve_connection(stream, conn, proxy, shutdown).await;
}

async fn serve_connection<IO>(
    io: IO,
    conn: Arc<ConnInfo>,
    proxy: Arc<DockerProxy>,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if conn.slot.is_none() {
        return refuse_connection(io, &conn, proxy.limits().max_connections_per_client).await;
    }
    let proxy_idle = proxy.limits().idle_timeout;
    // The header timeout also closes a keep-alive connection idle for as
    // long; a hijacked stream or a streaming response is not timed. No half
    // close, as with dockerd: a client that goes away while its request is in
    // flight (`docker run -d` leaves a `wait` behind) ends the request and
    // the daemon's side of it, instead of holding both until the daemon
    // answers.
    let service = service_fn(move |req| proxy.clone().handle(req, conn.clone()));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy_idle)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Answers a connection over its client's cap: 429 with Docker's error body
/// for its first request, then closes it (at most [`REFUSED_TIMEOUT`] later).
async fn refuse_connection<IO>(io: IO, conn: &ConnInfo, max: usize)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(listener = %conn.listener, peer = %conn.peer, max, "connection refused: the client holds clients.max_connections_per_client connections");
    let message = format!(
        "too many connections from this client: at most {max} at once (clients.max_connections_per_client); close some and retry"
    );
    let service = service_fn(move |_req| {
        let response = crate::docker::error::json_error(StatusCode::TOO_MANY_REQUESTS, &message);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSED_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(REFUSED_TIMEOUT, connection).await;
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
