//! What the caching proxy's listeners serve, as the serve layer
//! ([`crate::listen::serve`]) runs them:
//! - the HTTP and HTTPS listeners (and TLS terminated inside a forward
//!   proxy's CONNECT) are served by the [`Proxy`]: each client address
//!   holds at most `caching.proxy.max_connections_per_client` connections,
//!   one over the cap is closed unanswered; plain connections send checked
//!   hits with `sendfile` ([`PlainStream`]);
//! - [`Admin`]: `GET /metrics` (Prometheus text) and `GET /healthz`.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::body::Metered;
use super::conn::{ConnInfo, ListenerInfo};
use super::handler::Proxy;
use super::metrics::Metrics;
use super::plain::PlainStream;
use crate::listen::limit::Slot;
use crate::listen::serve::{Accepted, Service};
use crate::listen::Peer;

impl Service for Proxy {
    type Site = ListenerInfo;
    type Slot = Slot<IpAddr>;
    type Conn = ConnInfo;
    type Body = Metered;
    type Plain = PlainStream;

    fn admit(&self, peer: &Peer, _socket: Option<&Arc<Path>>) -> Option<Slot<IpAddr>> {
        self.admit(peer.addr()?)
    }

    fn plain(stream: TcpStream) -> PlainStream {
        PlainStream::new(stream)
    }

    fn connect(&self, listener: &ListenerInfo, conn: Accepted<Slot<IpAddr>>) -> Option<ConnInfo> {
        Some(ConnInfo {
            listener: listener.name,
            scheme: listener.scheme,
            sni: conn.sni,
            peer: conn.peer.addr()?,
        })
    }

    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Result<Response<Metered>, Infallible>> + Send + 'static {
        self.handle(req, conn)
    }
}

/// The admin listener; no cap on connections.
pub struct Admin {
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(proxy: Arc<Proxy>, metrics: Arc<Metrics>) -> Self {
        Admin { proxy, metrics }
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let text = match path {
            "/metrics" => {
                let cache = self.proxy.cache();
                let mut text = self.metrics.render(&cache.store().stats());
                if let Some(shared) = cache.shared() {
                    text.push_str(&Metrics::render_shared(&shared.stats()));
                }
                Some(text)
            }
            "/healthz" => Some("ok\n".to_owned()),
            _ => None,
        };
        let found = text.is_some();
        let mut res = Response::new(Full::new(Bytes::from(
            text.unwrap_or_else(|| "not found\n".into()),
        )));
        if !found {
            *res.status_mut() = StatusCode::NOT_FOUND;
        }
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        res
    }
}

impl Service for Admin {
    type Site = ();
    type Slot = ();
    type Conn = ();
    type Body = Full<Bytes>;
    type Plain = TcpStream;

    fn admit(&self, _peer: &Peer, _socket: Option<&Arc<Path>>) -> Option<()> {
        Some(())
    }

    fn plain(stream: TcpStream) -> TcpStream {
        stream
    }

    fn connect(&self, _site: &(), _conn: Accepted<()>) -> Option<()> {
        Some(())
    }

    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _conn: Arc<()>,
    ) -> impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static {
        let response = self.answer(req.uri().path());
        async move { Ok(response) }
    }
}
