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

/// A response body passed on unchanged whose bytes, when the whole body is
/// at most `limit` bytes and ends cleanly, go to `done` at its end (a
/// registry's small configuration file read on its way to the client).
/// The end is the body's own, or its announced length (`expected`): hyper
/// stops polling a body once it sent a `Content-Length` worth of bytes.
pub struct Sniffed<F: FnOnce(Bytes) + Send + 'static> {
    inner: ProxyBody,
    seen: Option<bytes::BytesMut>,
    limit: usize,
    expected: Option<u64>,
    done: Option<F>,
}

impl<F: FnOnce(Bytes) + Send + 'static> Sniffed<F> {
    pub fn new(inner: ProxyBody, limit: usize, expected: Option<u64>, done: F) -> Self {
        Sniffed {
            inner,
            seen: Some(bytes::BytesMut::new()),
            limit,
            expected,
            done: Some(done),
        }
    }
}

impl<F: FnOnce(Bytes) + Send + 'static> Sniffed<F> {
    fn finish(&mut self) {
        if let (Some(seen), Some(done)) = (self.seen.take(), self.done.take()) {
            done(seen.freeze());
        }
    }
}

impl<F: FnOnce(Bytes) + Send + Unpin + 'static> Body for Sniffed<F> {
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
                    let limit = self.limit;
                    let fits = self
                        .seen
                        .as_ref()
                        .is_some_and(|seen| seen.len() + data.len() <= limit);
                    if fits {
                        if let Some(seen) = self.seen.as_mut() {
                            seen.extend_from_slice(data);
                        }
                    } else {
                        self.seen = None;
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.seen = None,
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {}
        }
        // hyper stops polling a body that says it has ended, or that sent
        // its announced length.
        let reached = match (self.expected, &self.seen) {
            (Some(n), Some(seen)) => seen.len() as u64 == n,
            _ => false,
        };
        if reached || self.inner.is_end_stream() {
            self.finish();
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn body(chunks: Vec<Result<&'static [u8], &'static str>>) -> ProxyBody {
        let frames = chunks.into_iter().map(|c| {
            c.map(|b| Frame::data(Bytes::from_static(b)))
                .map_err(BoxError::from)
        });
        BodyExt::boxed_unsync(StreamBody::new(futures_util::stream::iter(frames)))
    }

    async fn sniff(inner: ProxyBody, limit: usize) -> (Result<Bytes, BoxError>, Option<Bytes>) {
        let got = Arc::new(Mutex::new(None));
        let keep = got.clone();
        let sniffed = Sniffed::new(inner, limit, None, move |b| *keep.lock().unwrap() = Some(b));
        let read = sniffed.collect().await.map(|c| c.to_bytes());
        let seen = got.lock().unwrap().take();
        (read, seen)
    }

    #[tokio::test]
    async fn a_small_whole_body_is_seen_and_passed_on_unchanged() {
        let (read, seen) = sniff(body(vec![Ok(b"{\"dl\":"), Ok(b"\"x\"}")]), 64).await;
        assert_eq!(read.unwrap(), "{\"dl\":\"x\"}");
        assert_eq!(seen.unwrap(), "{\"dl\":\"x\"}");
        let full =
            BodyExt::boxed_unsync(Full::new(Bytes::from_static(b"abc")).map_err(|e| match e {}));
        assert_eq!(sniff(full, 3).await.1.unwrap(), "abc");
    }

    #[tokio::test]
    async fn a_body_is_seen_once_its_announced_length_went_by() {
        let got = Arc::new(Mutex::new(None));
        let keep = got.clone();
        let inner = body(vec![Ok(b"{}"), Ok(b"never read")]);
        let mut sniffed =
            Sniffed::new(inner, 64, Some(2), move |b| *keep.lock().unwrap() = Some(b));
        let first = sniffed.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "{}");
        assert_eq!(got.lock().unwrap().take().unwrap(), "{}");
    }

    #[tokio::test]
    async fn an_oversized_or_failed_body_is_not_seen() {
        let (read, seen) = sniff(body(vec![Ok(b"0123"), Ok(b"4567")]), 6).await;
        assert_eq!(read.unwrap(), "01234567");
        assert!(seen.is_none());
        let (read, seen) = sniff(body(vec![Ok(b"01"), Err("cut")]), 64).await;
        assert!(read.is_err());
        assert!(seen.is_none());
    }
}
