//! The bodies the caching proxy sends clients, and their log.
//!
//! Every response is a [`ProxyBody`] (shared with the Docker side): an
//! `Err` frame makes the client's transfer fail, never end cleanly; a miss
//! being stored is such a body (see `tee.rs`). [`Metered`] wraps the body
//! sent to a client; it counts its bytes into the per-domain counters as
//! they go and writes the request's one log event ([`RequestLog`]) when the
//! body is finished or dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::conn::ConnInfo;
use super::metrics::DomainCounters;
use crate::http::{BoxError, ProxyBody};

/// Where a response's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the disk cache.
    Cache,
    /// Streamed from the origin.
    Origin,
    /// Made up by the proxy (refusals, errors, 304s from the cache).
    Proxy,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Origin => "origin",
            Source::Proxy => "proxy",
        }
    }
}

/// Everything the per-request log event says, filled in as the request
/// goes through the cache state machine.
#[derive(Debug)]
pub struct RequestLog {
    pub listener: &'static str,
    pub peer: std::net::SocketAddr,
    pub method: http::Method,
    pub host: String,
    pub domain: Option<String>,
    /// Path without the query (queries may carry tokens).
    pub path: String,
    /// `hit`, `miss`, `revalidated`, `bypass`, `refused`...
    pub state: &'static str,
    /// Why (the cache's reason enums, or the refusal).
    pub reason: String,
    pub status: u16,
    pub source: Source,
    pub started: Instant,
}

impl RequestLog {
    /// The log of a request just received; the handler fills in the rest.
    pub fn new(method: &http::Method, path: &str, conn: &ConnInfo) -> Self {
        RequestLog {
            listener: conn.listener,
            peer: conn.peer,
            method: method.clone(),
            host: String::new(),
            domain: None,
            path: path.to_owned(),
            state: "refused",
            reason: String::new(),
            status: 0,
            source: Source::Proxy,
            started: Instant::now(),
        }
    }

    fn emit(&self, bytes: u64, complete: bool) {
        tracing::info!(
            target: "cistern::cache::access",
            listener = self.listener,
            peer = %self.peer,
            method = %self.method,
            host = %self.host,
            domain = self.domain.as_deref().unwrap_or("-"),
            path = %self.path,
            state = self.state,
            reason = %self.reason,
            status = self.status,
            bytes,
            source = self.source.as_str(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            complete,
            "cache request"
        );
    }
}

/// Counts a response body's bytes and logs the request when it is over.
pub struct Metered {
    inner: ProxyBody,
    log: RequestLog,
    counter: Option<Arc<DomainCounters>>,
    expected: Option<u64>,
    bytes: u64,
    done: bool,
    failed: bool,
}

impl Metered {
    /// Wraps `inner`, whose announced length (`Content-Length`) is
    /// `expected`.
    pub fn new(
        inner: ProxyBody,
        log: RequestLog,
        counter: Option<Arc<DomainCounters>>,
        expected: Option<u64>,
    ) -> Self {
        Metered {
            inner,
            log,
            counter,
            expected,
            bytes: 0,
            done: false,
            failed: false,
        }
    }

    fn bytes_counter(&self) -> Option<&AtomicU64> {
        let counter = self.counter.as_ref()?;
        match self.log.source {
            Source::Cache => Some(&counter.bytes_from_cache),
            Source::Origin => Some(&counter.bytes_from_origin),
            Source::Proxy => None,
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.bytes += n;
                    if let Some(c) = self.bytes_counter() {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.failed = true,
            Poll::Ready(None) => self.done = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // A body hyper never polled because it is empty (HEAD, 304) counts
        // as complete.
        let complete = !self.failed
            && (self.done || self.inner.is_end_stream() || self.expected == Some(self.bytes));
        self.log.emit(self.bytes, complete);
    }
}
