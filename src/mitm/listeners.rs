//! What the caching proxy's listeners serve, as the serve layer
//! ([`crate::listen::serve`]) runs them:
//! - the HTTP and HTTPS listeners (and TLS terminated inside a forward
//!   proxy's CONNECT) are served by the [`Proxy`]: each client address
//!   holds at most `caching.proxy.max_connections_per_client` connections,
//!   one over the cap is closed unanswered; plain connections send checked
//!   hits with `sendfile` ([`PlainStream`]).
//!
//! The admin listener is cistern's, not the caching proxy's
//! ([`crate::admin`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::body::Metered;
use super::conn::{ConnInfo, ListenerInfo};
use super::handler::Proxy;
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
