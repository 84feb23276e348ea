//! The serve layer: one accept loop for every listener cistern has (the
//! Docker listeners, job and container sockets, the caching proxy's HTTP
//! and HTTPS listeners, the forward proxy, the admin listener). What a
//! connection is served is a [`Service`]'s; how it is accepted, capped,
//! secured, timed and shut down is the same for all, and lives here.
//!
//! Each accepted connection, in order:
//! 1. takes a place among its client's ([`Service::admit`], usually a
//!    [`super::limit::ConnectionLimit`]); one over the cap is closed at once,
//!    or answered ([`Service::refusal`]) and then closed;
//! 2. gets `TCP_NODELAY` (TCP), then a task of its own on the caller's
//!    [`TaskTracker`], so that shutdown can wait for it;
//! 3. on a TLS listener, completes the handshake in that task (at most
//!    [`HANDSHAKE_TIMEOUT`], abandoned on shutdown): a slow client never
//!    holds up the accept loop, and a failed handshake reaches no service;
//! 4. is served HTTP ([`Protocol`]) until the client goes away, or takes
//!    longer than the idle timeout to send a request's head (an HTTP/1.1
//!    connection idle between requests too), or stops answering HTTP/2
//!    pings.
//!
//! Shutdown: the loop stops accepting and drops its socket (a unix
//! socket's file goes with it), and every connection finishes the request
//! under way without reading another. A hijacked stream or a streaming
//! response is not timed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::Reloadable;
use super::{ClientCert, Peer, UnixSocket};
use crate::http::BoxError;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection over its client's cap has to send the request it
/// is refused.
const REFUSED_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an HTTP/2 client may take to answer a keep-alive ping.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What listeners serve: one value may serve many listeners, each with its
/// own [`Service::Site`]. The serve layer calls these hooks for each
/// connection, in the order of the module docs.
pub trait Service: Send + Sync + Sized + 'static {
    /// What the connections of one listener share (its name, its policy,
    /// its scheme...): given to [`run`], handed to [`Service::connect`].
    type Site: Send + Sync + 'static;
    /// A connection's place among its client's, held for as long as the
    /// connection is open (and by whatever else keeps the `Arc`).
    type Slot: Send + Sync + 'static;
    /// What each request of a connection is handed.
    type Conn: Send + Sync + 'static;
    /// The body of the responses.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    /// The stream a plain TCP connection is served over: the socket itself,
    /// or a wrapper that writes some bytes its own way.
    type Plain: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// A place for a new connection from `peer` (on the unix socket at
    /// `socket`), or `None` when its client holds the most allowed.
    fn admit(&self, peer: &Peer, socket: Option<&Arc<Path>>) -> Option<Self::Slot>;

    /// What a connection over its client's cap is answered. By default it
    /// is closed at once, unanswered.
    fn refusal(&self) -> Option<Refusal<Self::Body>> {
        None
    }

    /// Wraps an accepted plain TCP connection.
    fn plain(stream: TcpStream) -> Self::Plain;

    /// What the requests of a connection just accepted on `site`'s listener
    /// (and, on a TLS listener, secured) are handed; `None` closes it
    /// unserved.
    fn connect(&self, site: &Self::Site, conn: Accepted<Self::Slot>) -> Option<Self::Conn>;

    /// Answers one request.
    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<Self::Conn>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Infallible>> + Send + 'static;
}

/// Builds the answer to each request on a connection over its client's cap.
pub type Refusal<B> = Box<dyn Fn() -> Response<B> + Send + Sync>;

/// A connection the layer accepted and admitted.
#[derive(Debug)]
pub struct Accepted<S> {
    /// Who is at the other end; after a TLS handshake, [`Peer::Tls`] with
    /// the client certificate rustls verified, if any.
    pub peer: Peer,
    /// The path of the unix socket it came in on (`None` for TCP).
    pub socket: Option<Arc<Path>>,
    /// The TLS server name the client asked for.
    pub sni: Option<String>,
    /// Its place among its client's.
    pub slot: Arc<S>,
}

/// A bound socket, ready to accept.
#[derive(Debug)]
pub enum Socket {
    Unix(UnixSocket),
    Tcp(TcpListener),
}

/// Where a TLS listener's configuration comes from.
#[derive(Clone)]
pub enum Tls {
    /// One configuration for ever.
    Fixed(TlsAcceptor),
    /// Read again on SIGHUP; each handshake takes the current one.
    Reloadable(Arc<Reloadable>),
}

impl Tls {
    fn acceptor(&self) -> TlsAcceptor {
        match self {
            Tls::Fixed(acceptor) => acceptor.clone(),
            Tls::Reloadable(tls) => TlsAcceptor::from(tls.current()),
        }
    }
}

/// The HTTP versions a connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, with upgrades.
    Http1,
    /// HTTP/1.1 with upgrades, or HTTP/2 chosen by ALPN or the h2 preface;
    /// HTTP/2 connections are pinged every idle timeout.
    Auto,
}

/// How connections are served HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Http {
    pub protocol: Protocol,
    /// How long a client may take to send a request's head, or sit idle
    /// between requests (HTTP/1.1), or the ping period (HTTP/2).
    pub idle_timeout: Duration,
}

/// One listener: its socket and how its connections are served.
pub struct Listener {
    name: Arc<str>,
    socket: Socket,
    tls: Option<Tls>,
    http: Http,
    quiet_handshakes: bool,
}

impl Listener {
    /// The listener `name` on `socket`: plain HTTP/1.1, idle timeout
    /// `idle_timeout`.
    pub fn new(name: impl Into<Arc<str>>, socket: Socket, idle_timeout: Duration) -> Self {
        Listener {
            name: name.into(),
            socket,
            tls: None,
            http: Http {
                protocol: Protocol::Http1,
                idle_timeout,
            },
            quiet_handshakes: false,
        }
    }

    /// TCP connections complete a TLS handshake first (`None`: plain).
    pub fn tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// Serves `protocol`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.http.protocol = protocol;
        self
    }

    /// Failed handshakes are logged at debug, not info: where clients
    /// routinely fail them (the caching proxy's, without cistern's CA).
    pub fn quiet_handshakes(mut self) -> Self {
        self.quiet_handshakes = true;
        self
    }
}

/// Accepts connections on `listener` until `shutdown` fires and serves
/// each with `service`, as `site`'s, on a task of `tasks`; returns once the
/// socket is closed (connections may still be finishing on `tasks`).
pub async fn run<S: Service>(
    listener: Listener,
    service: Arc<S>,
    site: S::Site,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let Listener {
        name,
        socket,
        tls,
        http,
        quiet_handshakes,
    } = listener;
    let site = Arc::new(site);
    let path: Option<Arc<Path>> = match &socket {
        Socket::Unix(s) => Some(Arc::from(s.path())),
        Socket::Tcp(_) => None,
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&socket) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = service.admit(&peer, path.as_ref());
        let refusal = match slot {
            Some(_) => None,
            None => match service.refusal() {
                Some(refusal) => Some(refusal),
                None => {
                    log_refused(&name, &peer);
                    continue;
                }
            },
        };
        let conn = Connection {
            listener: name.clone(),
            site: site.clone(),
            peer,
            socket: path.clone(),
            slot: slot.map(Arc::new),
            refusal,
            http,
            shutdown: shutdown.clone(),
        };
        match stream {
            Stream::Unix(stream) => {
                tasks.spawn(conn.serve(stream, None, service.clone()));
            }
            Stream::Tcp(stream, addr) => {
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => tasks.spawn(conn.serve(S::plain(stream), None, service.clone())),
                    Some(tls) => tasks.spawn(conn.serve_tls(
                        tls.acceptor(),
                        stream,
                        addr,
                        quiet_handshakes,
                        service.clone(),
                    )),
                };
            }
        }
    }
    drop(socket);
    tracing::debug!(listener = %name, "listener closed");
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream, SocketAddr),
}

async fn accept(socket: &Socket) -> std::io::Result<(Stream, Peer)> {
    match socket {
        Socket::Unix(s) => {
            let (stream, _) = s.listener.accept().await?;
            let peer = match stream.peer_cred() {
                Ok(cred) => Peer::Unix {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                },
                Err(_) => Peer::Unknown,
            };
            Ok((Stream::Unix(stream), peer))
        }
        Socket::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            Ok((Stream::Tcp(stream, addr), Peer::Tcp(addr)))
        }
    }
}

/// One accepted connection, on its way to being served.
struct Connection<S: Service> {
    listener: Arc<str>,
    site: Arc<S::Site>,
    peer: Peer,
    socket: Option<Arc<Path>>,
    /// `None`: over its client's cap, answered with `refusal`.
    slot: Option<Arc<S::Slot>>,
    refusal: Option<Refusal<S::Body>>,
    http: Http,
    shutdown: CancellationToken,
}

impl<S: Service> Connection<S> {
    /// Completes the TLS handshake, then serves the connection with the
    /// client certificate rustls verified, if any, in its [`Peer`].
    async fn serve_tls(
        mut self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        addr: SocketAddr,
        quiet: bool,
        service: Arc<S>,
    ) {
        let stream = match handshake(&acceptor, stream, &self.shutdown).await {
            Ok(stream) => stream,
            Err(err) => return log_handshake(&self.listener, addr, &err, quiet),
        };
        self.peer = tls_peer(addr, &stream);
        let sni = stream.get_ref().1.server_name().map(str::to_owned);
        self.serve(stream, sni, service).await;
    }

    /// Serves the connection: its refusal when over the cap, else the
    /// service's answers until it ends.
    async fn serve<IO>(self, io: IO, sni: Option<String>, service: Arc<S>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            listener,
            site,
            peer,
            socket,
            slot,
            refusal,
            http,
            shutdown,
        } = self;
        let Some(slot) = slot else {
            log_refused(&listener, &peer);
            if let Some(refusal) = refusal {
                refuse(io, refusal).await;
            }
            return;
        };
        let accepted = Accepted {
            peer,
            socket,
            sni,
            slot: slot.clone(),
        };
        let Some(conn) = service.connect(&site, accepted) else {
            return;
        };
        serve_connection(io, service, Arc::new(conn), http, shutdown).await;
        drop(slot);
    }
}

/// The peer of a secured connection. rustls verified the chain; the first
/// certificate is the client's own.
fn tls_peer(addr: SocketAddr, stream: &TlsStream<TcpStream>) -> Peer {
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| ClientCert::from_der(der))
        .map(Arc::new);
    Peer::Tls { addr, client }
}

fn log_refused(listener: &str, peer: &Peer) {
    tracing::debug!(%listener, %peer, "connection refused: its client holds the most connections allowed");
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Failed(#[source] std::io::Error),
    #[error("timed out")]
    TimedOut,
    #[error("cistern is shutting down")]
    ShuttingDown,
}

/// Completes a TLS handshake on `io`: at most [`HANDSHAKE_TIMEOUT`], and
/// abandoned when `shutdown` fires.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    shutdown: &CancellationToken,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return Err(HandshakeError::ShuttingDown),
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)) => done,
    };
    match handshake {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(HandshakeError::Failed(err)),
        Err(_) => Err(HandshakeError::TimedOut),
    }
}

fn log_handshake(listener: &str, peer: SocketAddr, err: &HandshakeError, quiet: bool) {
    match (err, quiet) {
        (HandshakeError::ShuttingDown, _) => {}
        (HandshakeError::TimedOut, false) => {
            tracing::info!(%listener, %peer, "TLS handshake timed out")
        }
        (HandshakeError::TimedOut, true) => {
            tracing::debug!(%listener, %peer, "TLS handshake timed out")
        }
        (HandshakeError::Failed(err), false) => {
            tracing::info!(%listener, %peer, error = %err, "TLS handshake failed")
        }
        (HandshakeError::Failed(err), true) => {
            tracing::debug!(%listener, %peer, error = %err, "TLS handshake failed")
        }
    }
}

/// Serves one connection with `service`, every request handed `conn`,
/// until it ends; at shutdown, lets the request under way finish and reads
/// no other.
///
/// No half close (hyper's default, and dockerd's): a client that goes away
/// while its request is in flight (`docker run -d` leaves a `wait` behind)
/// ends the request, instead of holding both sides until the answer.
pub async fn serve_connection<S, IO>(
    io: IO,
    service: Arc<S>,
    conn: Arc<S::Conn>,
    http: Http,
    shutdown: CancellationToken,
) where
    S: Service,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = service_fn(move |req| service.clone().call(req, conn.clone()));
    let io = TokioIo::new(io);
    let result = match http.protocol {
        Protocol::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(http.idle_timeout)
                .serve_connection(io, handle)
                .with_upgrades();
            until_shutdown(connection, &shutdown, |c| c.graceful_shutdown())
                .await
                .map_err(BoxError::from)
        }
        Protocol::Auto => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(http.idle_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(http.idle_timeout)
                .keep_alive_timeout(PING_TIMEOUT);
            let connection = builder.serve_connection_with_upgrades(io, handle);
            until_shutdown(connection, &shutdown, |c| c.graceful_shutdown()).await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Drives `connection` to its end; when `shutdown` fires first, asks it to
/// finish gracefully and waits for that.
async fn until_shutdown<C: Future>(
    connection: C,
    shutdown: &CancellationToken,
    graceful: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            graceful(connection.as_mut());
            connection.await
        }
    }
}

/// Answers a connection over its client's cap: `refusal` for its first
/// request, then closes it (at most [`REFUSED_TIMEOUT`] later).
async fn refuse<IO, B>(io: IO, refusal: Refusal<B>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    let service = service_fn(move |_req| {
        let response = refusal();
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSED_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(REFUSED_TIMEOUT, connection).await;
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::listen::limit::{ConnectionLimit, Slot};

    /// Answers every request `200 ok`; one connection per client address.
    struct Ok200 {
        limit: Arc<ConnectionLimit<IpAddr>>,
        answer_refused: bool,
    }

    impl Service for Ok200 {
        type Site = &'static str;
        type Slot = Slot<IpAddr>;
        type Conn = &'static str;
        type Body = Full<Bytes>;
        type Plain = TcpStream;

        fn admit(&self, peer: &Peer, _: Option<&Arc<Path>>) -> Option<Slot<IpAddr>> {
            self.limit.admit(peer.addr()?.ip())
        }

        fn refusal(&self) -> Option<Refusal<Full<Bytes>>> {
            let refuse = || {
                let mut response = Response::new(Full::new(Bytes::from("too many")));
                *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                response
            };
            self.answer_refused.then(|| Box::new(refuse) as Refusal<_>)
        }

        fn plain(stream: TcpStream) -> TcpStream {
            stream
        }

        fn connect(&self, site: &&'static str, _: Accepted<Slot<IpAddr>>) -> Option<&'static str> {
            Some(*site)
        }

        async fn call(
            self: Arc<Self>,
            _req: Request<Incoming>,
            conn: Arc<&'static str>,
        ) -> Result<Response<Full<Bytes>>, Infallible> {
            Ok(Response::new(Full::new(Bytes::from(*conn))))
        }
    }

    /// Sends one request and reads what comes back until the server closes
    /// (or resets) the connection or `done` is in it.
    async fn ask(stream: &mut TcpStream, done: &str) -> String {
        let request = b"GET / HTTP/1.1\r\nhost: serve.test\r\n\r\n";
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains(done) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    async fn start(answer_refused: bool) -> (SocketAddr, CancellationToken, TaskTracker) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Ok200 {
            limit: ConnectionLimit::new(1, "test.max"),
            answer_refused,
        });
        let listener = Listener::new("test", Socket::Tcp(listener), Duration::from_secs(30));
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        tasks.spawn(run(
            listener,
            service,
            "served",
            tasks.clone(),
            shutdown.clone(),
        ));
        (addr, shutdown, tasks)
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_answered_or_closed_and_shutdown_drains() {
        for answer_refused in [true, false] {
            let (addr, shutdown, tasks) = start(answer_refused).await;
            let mut first = TcpStream::connect(addr).await.unwrap();
            assert!(ask(&mut first, "served").await.starts_with("HTTP/1.1 200"));

            let mut second = TcpStream::connect(addr).await.unwrap();
            let answer = ask(&mut second, "too many").await;
            if answer_refused {
                assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            } else {
                assert_eq!(answer, "", "closed unanswered");
            }

            // The first connection, idle between requests, is closed at
            // shutdown, and every task ends.
            shutdown.cancel();
            tasks.close();
            tokio::time::timeout(Duration::from_secs(5), tasks.wait())
                .await
                .expect("the accept loop and the connections end");
            assert_eq!(first.read(&mut [0u8; 16]).await.unwrap(), 0);
            assert!(
                TcpStream::connect(addr).await.is_err(),
                "no longer listening"
            );
        }
    }
}
