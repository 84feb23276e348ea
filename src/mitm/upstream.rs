//! The origin side: a pooled hyper client whose connector resolves names
//! with static overrides first and then the system resolver (never the
//! containers' extra hosts, which only exist inside containers), and
//! verifies HTTPS origins against the operating system's trust store plus
//! configured extra roots.
//!
//! The origin is contacted with the scheme and port the client used:
//! `https://name/...` goes to `name:443` over TLS (the port from the URL if
//! it had one); an override replaces the address, never the TLS name. An
//! override keyed `name:port` (e.g. `deb.example.test:443`) wins over one
//! keyed `name`, so one name can have different HTTP and HTTPS origins.
//! Upstream connections speak HTTP/1.1 and are kept alive in a pool.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::StartError;
use crate::http::ProxyBody;

/// The origin client.
pub type OriginClient = Client<Connector, ProxyBody>;

/// Builds the pooled client.
pub fn client(
    extra_roots: &[PathBuf],
    overrides: &BTreeMap<String, SocketAddr>,
    connect_timeout: Duration,
) -> Result<OriginClient, StartError> {
    let roots = roots(extra_roots)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = Connector {
        dialer: Dialer::new(overrides),
        tls: TlsConnector::from(Arc::new(tls)),
        timeout: connect_timeout,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector))
}

/// The system trust store plus the configured PEM files.
fn roots(extra: &[PathBuf]) -> Result<RootCertStore, StartError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!(error = %err, "problem loading the system trust store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system trust roots loaded");
    for path in extra {
        let pem =
            std::fs::read(path).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
            found += 1;
        }
        if found == 0 {
            return Err(StartError::Tls(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
    }
    Ok(roots)
}

/// Connects to origins: override or system resolver, TCP, then TLS for
/// `https`.
#[derive(Clone)]
pub struct Connector {
    dialer: Dialer,
    tls: TlsConnector,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = OriginStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<OriginStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let connect = this.connect(uri);
            match tokio::time::timeout(this.timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connecting to the origin timed out",
                )),
            }
        })
    }
}

/// Opens TCP connections to origins: a static override for `name:port` or
/// `name`, else the system resolver. Also used for forward-proxy tunnels.
#[derive(Clone)]
pub struct Dialer {
    overrides: Arc<BTreeMap<String, SocketAddr>>,
}

impl Dialer {
    /// A dialer with these overrides.
    pub fn new(overrides: &BTreeMap<String, SocketAddr>) -> Dialer {
        Dialer {
            overrides: Arc::new(overrides.clone()),
        }
    }

    /// Connects to `host:port` (host lower-case, without a trailing dot).
    pub async fn dial(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = match self
            .overrides
            .get(&format!("{host}:{port}"))
            .or_else(|| self.overrides.get(host))
        {
            Some(addr) => vec![*addr],
            None => tokio::net::lookup_host((host, port)).await?.collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Connector {
    async fn connect(&self, uri: Uri) -> io::Result<OriginStream> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let host = uri
            .host()
            .ok_or_else(|| invalid("origin URL has no host"))?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("origin URL scheme is neither http nor https")),
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let stream = self.dialer.dial(&host, port).await?;
        if !tls {
            return Ok(OriginStream::Plain(TokioIo::new(stream)));
        }
        let name =
            ServerName::try_from(host).map_err(|_| invalid("origin host is not a DNS name"))?;
        let tls = self.tls.connect(name, stream).await?;
        Ok(OriginStream::Tls(Box::new(TokioIo::new(tls))))
    }
}

/// A connection to an origin.
pub enum OriginStream {
    /// Plain HTTP.
    Plain(TokioIo<TcpStream>),
    /// HTTPS.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for OriginStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_flush(cx),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
