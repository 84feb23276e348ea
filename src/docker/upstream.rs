//! The connection to the real Docker daemon: a pooled hyper client over the
//! daemon's unix socket or TCP address.
//!
//! Connections are kept alive and reused like the docker CLI does, so a
//! request through cistern costs one extra local hop and no extra connect.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::ProxyBody;
use crate::config::{Upstream, UpstreamEndpoint};

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
