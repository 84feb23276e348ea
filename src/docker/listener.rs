//! How [`DockerProxy`] serves the connections of a Docker listener, or of a
//! job's or a container's socket, on the serve layer
//! ([`crate::listen::serve`]): who counts as one client for
//! `clients.max_connections_per_client`, what a connection over that cap
//! is answered (429 with Docker's error body), and what each request is
//! handed ([`ConnInfo`]: the listener, its policy, the fixed tenant).

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::{ClientKey, ConnInfo, DockerProxy, ListenerInfo};
use crate::daemon::error::json_error;
use crate::http::ProxyBody;
use crate::listen::limit::Slot;
use crate::listen::serve::{Accepted, Refusal, Service};
use crate::listen::Peer;

impl Service for DockerProxy {
    type Site = ListenerInfo;
    type Slot = Slot<ClientKey>;
    type Conn = ConnInfo;
    type Body = ProxyBody;
    type Plain = TcpStream;

    /// One client: an address on TCP, a user on one unix socket.
    fn admit(&self, peer: &Peer, socket: Option<&Arc<Path>>) -> Option<Slot<ClientKey>> {
        let client = match peer {
            Peer::Tcp(addr) | Peer::Tls { addr, .. } => ClientKey::Ip(addr.ip()),
            Peer::Unix { uid, .. } => ClientKey::Unix {
                socket: socket.cloned(),
                uid: Some(*uid),
            },
            Peer::Unknown => ClientKey::Unix {
                socket: socket.cloned(),
                uid: None,
            },
        };
        self.connections.admit(client)
    }

    fn refusal(&self) -> Option<Refusal<ProxyBody>> {
        let max = self.limits().max_connections_per_client;
        let message = format!(
            "too many connections from this client: at most {max} at once (clients.max_connections_per_client); close some and retry"
        );
        Some(Box::new(move || {
            json_error(StatusCode::TOO_MANY_REQUESTS, &message)
        }))
    }

    fn plain(stream: TcpStream) -> TcpStream {
        stream
    }

    fn connect(
        &self,
        listener: &ListenerInfo,
        conn: Accepted<Slot<ClientKey>>,
    ) -> Option<ConnInfo> {
        Some(ConnInfo {
            listener: listener.name.clone(),
            peer: conn.peer,
            policy: listener.policy.clone(),
            fixed: listener.fixed.clone(),
            socket: conn.socket,
            slot: Some(conn.slot),
        })
    }

    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
        self.handle(req, conn)
    }
}
