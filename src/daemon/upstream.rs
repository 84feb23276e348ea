//! The connection to the real Docker daemon: a pooled hyper client over the
//! daemon's unix socket or TCP address.
//!
//! Connections are kept alive and reused like the docker CLI does, so a
//! request through cistern costs one extra local hop and no extra connect.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::http::{BoxError, ProxyBody};

/// Where the real Docker daemon listens.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub endpoint: UpstreamEndpoint,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEndpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl fmt::Display for UpstreamEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            UpstreamEndpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// The pooled client cistern forwards requests with.
pub type UpstreamClient = Client<DaemonConnector, ProxyBody>;

/// Builds the client for the configured daemon.
pub fn client(upstream: &Upstream) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(DaemonConnector {
            endpoint: upstream.endpoint.clone(),
            timeout: upstream.connect_timeout,
        })
}

/// The authority used in URIs sent to the daemon; dockerd ignores it, as it
/// does for the CLI's own `http://docker` / `http://api.moby.localhost`.
pub const AUTHORITY: &str = "docker";

/// An answer to one of cistern's own calls to the daemon, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The daemon's `{"message": ...}`, or the status.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| self.status.to_string())
    }
}

/// Why one of cistern's own calls to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// cistern built a request it cannot send (a bug, or an unusable name).
    #[error("bad daemon request: {0}")]
    Request(String),
    /// The daemon could not be reached or broke the exchange.
    #[error("the Docker daemon did not answer: {0}")]
    Unreachable(String),
    /// The answer could not be read, or was larger than the cap.
    #[error("reading the daemon's answer: {0}")]
    Read(String),
}

/// Makes one call of cistern's own (an inspect, an archive read, a cleanup
/// removal, ...) on the pooled client and reads the answer whole, at most
/// `cap` bytes.
pub async fn call(
    client: &UpstreamClient,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
    cap: usize,
) -> Result<Answer, CallError> {
    let response = client
        .request(request(method, path_and_query, headers, body)?)
        .await
        .map_err(|err| CallError::Unreachable(err.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, cap)
        .collect()
        .await
        .map_err(|err: BoxError| CallError::Read(err.to_string()))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Opens connections to the daemon, whatever the request URI says.
#[derive(Debug, Clone)]
pub struct DaemonConnector {
    endpoint: UpstreamEndpoint,
    timeout: Duration,
}

impl tower_service::Service<Uri> for DaemonConnector {
    type Response = TokioIo<DaemonStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let connect = async {
                match &endpoint {
                    UpstreamEndpoint::Unix(path) => {
                        UnixStream::connect(path).await.map(DaemonStream::Unix)
                    }
                    UpstreamEndpoint::Tcp(addr) => {
                        let stream = TcpStream::connect(addr.as_str()).await?;
                        stream.set_nodelay(true)?;
                        Ok(DaemonStream::Tcp(stream))
                    }
                }
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
                Ok(Err(err)) => Err(io::Error::new(err.kind(), format!("{endpoint}: {err}"))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{endpoint}: no connection within {timeout:?}"),
                )),
            }
        })
    }
}

/// A connection to the daemon.
#[derive(Debug)]
pub enum DaemonStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Connection for DaemonStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for DaemonStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DaemonStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            DaemonStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DaemonStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DaemonStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            DaemonStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DaemonStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            DaemonStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            DaemonStream::Unix(s) => s.is_write_vectored(),
            DaemonStream::Tcp(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DaemonStream::Unix(s) => Pin::new(s).poll_flush(cx),
            DaemonStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Shuts down the write half only: the daemon sees stdin EOF while its
    /// output keeps flowing back.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DaemonStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            DaemonStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One request of cistern's own to the daemon.
fn request(
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<ProxyBody>, CallError> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(AUTHORITY)
        .path_and_query(path_and_query)
        .build()
        .map_err(|err| CallError::Request(err.to_string()))?;
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    req.body(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
    .map_err(|err| CallError::Request(err.to_string()))
}

/// A `GET` whose answer is read as it streams (the event stream): the
/// status and the body.
pub async fn stream(
    client: &UpstreamClient,
    path_and_query: &str,
) -> Result<(http::StatusCode, hyper::body::Incoming), CallError> {
    let response = client
        .request(request(
            Method::GET,
            path_and_query,
            HeaderMap::new(),
            Bytes::new(),
        )?)
        .await
        .map_err(|err| CallError::Unreachable(err.to_string()))?;
    let (parts, body) = response.into_parts();
    Ok((parts.status, body))
}
