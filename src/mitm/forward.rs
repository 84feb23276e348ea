//! The explicit forward proxy (`caching.forward_proxy`), for clients that
//! are configured with `http_proxy` / `https_proxy` rather than routed by
//! injected hosts. Off by default.
//!
//! ```text
//! CONNECT host:port ─┬─ cached domain ─► 200, TLS terminated with a leaf for
//!                    │                    host, then served like the HTTPS
//!                    │                    listener (cache, SNI = host)
//!                    ├─ others: tunnel ─► 200, bytes copied to host:port
//!                    └─ others: refuse ─► 403
//! GET http://host/… ─┬─ cached domain ─► the cache, like the HTTP listener
//!                    ├─ others: tunnel ─► forwarded uncached
//!                    └─ others: refuse ─► 403
//! ```
//!
//! With `others: refuse` (the default) it is never a proxy for anything but
//! the cached domains. With `tunnel` it relays anything for whoever reaches
//! its listen address: bind it where only CI jobs can.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::{Metered, RequestLog, Source};
use super::config::{ForwardProxyConfig, Others};
use super::conn::{ConnInfo, Scheme};
use super::domains::{normalise, split_authority};
use super::handler::Proxy;
use super::plain::PlainStream;
use super::upstream::Dialer;
use crate::http::body;
use crate::listen::limit::Slot;
use crate::listen::serve::{self, Accepted, HandshakeError, Http, Protocol, Service};
use crate::listen::Peer;

/// The forward proxy's shared state.
pub struct ForwardProxy {
    proxy: Arc<Proxy>,
    tls: TlsAcceptor,
    dialer: Dialer,
    others: Others,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl ForwardProxy {
    /// Builds it over the caching proxy's handler and TLS acceptor.
    pub fn new(
        proxy: Arc<Proxy>,
        tls: TlsAcceptor,
        dialer: Dialer,
        config: &ForwardProxyConfig,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        ForwardProxy {
            proxy,
            tls,
            dialer,
            others: config.others,
            tasks,
            shutdown,
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
        slot: Arc<Slot<IpAddr>>,
    ) -> Result<Response<Metered>, Infallible> {
        if req.method() == Method::CONNECT {
            return Ok(self.handle_connect(req, &conn, slot).await);
        }
        let cached = req
            .uri()
            .host()
            .map_or(true, |host| self.proxy.domains().matching(host).is_some());
        if cached || self.others == Others::Refuse {
            // Cached, or refused (403) by the caching proxy's routing.
            self.proxy.clone().handle(req, conn).await
        } else {
            self.proxy.clone().pass_through(req, conn).await
        }
    }

    /// Answers a CONNECT and takes over the connection it upgrades, which
    /// keeps the client connection's `slot` while it runs.
    async fn handle_connect(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &ConnInfo,
        slot: Arc<Slot<IpAddr>>,
    ) -> Response<Metered> {
        let target = req.uri().authority().map(|a| a.as_str().to_owned());
        let mut log = RequestLog::new(req.method(), "", conn);
        let Some((host, port)) = target.as_deref().and_then(split_authority) else {
            return answer(
                log,
                StatusCode::BAD_REQUEST,
                "refused",
                "CONNECT needs host:port".into(),
            );
        };
        let port = port.unwrap_or(443);
        log.host = host.clone();
        log.path = format!("{host}:{port}");
        let domain = self.proxy.domains().matching(&host).map(str::to_owned);
        log.domain = domain.clone();
        if domain.is_some() {
            let this = self.clone();
            let peer = conn.peer;
            self.tasks.spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => this.intercept(upgraded, host, peer).await,
                    Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
                }
                drop(slot);
            });
            let reason = "cached domain; TLS terminated by cistern".into();
            return answer(log, StatusCode::OK, "intercept", reason);
        }
        if self.others == Others::Refuse {
            let reason = format!("{host} is not a cached domain");
            return answer(log, StatusCode::FORBIDDEN, "refused", reason);
        }
        let upstream = match self.dialer.dial(&normalise(&host), port).await {
            Ok(stream) => stream,
            Err(err) => {
                let reason = format!("cannot reach {host}:{port}: {err}");
                return answer(log, StatusCode::BAD_GATEWAY, "tunnel", reason);
            }
        };
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let mut client = TokioIo::new(upgraded);
            let mut upstream = upstream;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = shutdown.cancelled() => {}
            }
            drop(slot);
        });
        let reason = "not a cached domain; tunnelled".into();
        answer(log, StatusCode::OK, "tunnel", reason)
    }

    /// Terminates TLS on a CONNECT tunnel to a cached domain and serves it
    /// like the HTTPS listener. The client's SNI must be the CONNECT host.
    async fn intercept(&self, upgraded: hyper::upgrade::Upgraded, host: String, peer: SocketAddr) {
        let io = TokioIo::new(upgraded);
        let stream = match serve::handshake(&self.tls, io, &self.shutdown).await {
            Ok(stream) => stream,
            Err(HandshakeError::ShuttingDown) => return,
            Err(HandshakeError::TimedOut) => {
                tracing::debug!(%peer, %host, "TLS handshake in CONNECT timed out");
                return;
            }
            Err(HandshakeError::Failed(err)) => {
                tracing::debug!(%peer, %host, error = %err, "TLS handshake in CONNECT failed");
                return;
            }
        };
        let sni = stream.get_ref().1.server_name().map(normalise);
        if sni.as_deref().is_some_and(|sni| sni != host) {
            tracing::warn!(%peer, %host, sni = ?sni, "TLS server name differs from the CONNECT host; closing");
            return;
        }
        let conn = Arc::new(ConnInfo {
            listener: "forward",
            scheme: Scheme::Https,
            sni: Some(host),
            peer,
        });
        let http = Http {
            protocol: Protocol::Auto,
            idle_timeout: self.proxy.idle_timeout(),
        };
        let shutdown = self.shutdown.clone();
        serve::serve_connection(stream, self.proxy.clone(), conn, http, shutdown).await;
    }
}

/// A client connection to the forward proxy.
pub struct ForwardConn {
    conn: Arc<ConnInfo>,
    /// Its place among its client's, held by the CONNECT tunnel it becomes.
    slot: Arc<Slot<IpAddr>>,
}

impl Service for ForwardProxy {
    type Site = ();
    type Slot = Slot<IpAddr>;
    type Conn = ForwardConn;
    type Body = Metered;
    type Plain = PlainStream;

    fn admit(&self, peer: &Peer, _socket: Option<&Arc<Path>>) -> Option<Slot<IpAddr>> {
        self.proxy.admit(peer.addr()?)
    }

    fn plain(stream: TcpStream) -> PlainStream {
        PlainStream::new(stream)
    }

    fn connect(&self, _site: &(), conn: Accepted<Slot<IpAddr>>) -> Option<ForwardConn> {
        let info = ConnInfo {
            listener: "forward",
            scheme: Scheme::Http,
            sni: None,
            peer: conn.peer.addr()?,
        };
        Some(ForwardConn {
            conn: Arc::new(info),
            slot: conn.slot,
        })
    }

    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ForwardConn>,
    ) -> impl Future<Output = Result<Response<Metered>, Infallible>> + Send + 'static {
        self.handle(req, conn.conn.clone(), conn.slot.clone())
    }
}

fn answer(
    mut log: RequestLog,
    status: StatusCode,
    state: &'static str,
    reason: String,
) -> Response<Metered> {
    if status.is_client_error() || status.is_server_error() {
        tracing::debug!(status = status.as_u16(), reason = %reason, "forward proxy refused");
    }
    let text = if status == StatusCode::OK {
        body::empty()
    } else {
        body::full(format!("cistern: {reason}\n"))
    };
    log.state = state;
    log.status = status.as_u16();
    log.source = Source::Proxy;
    log.reason = reason;
    let mut response = Response::new(Metered::new(text, log, None, None));
    *response.status_mut() = status;
    response
}
