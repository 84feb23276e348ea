//! A miss: the origin body streamed to the client and into the cache at once.
//!
//! The client's response body pulls the origin body itself ([`body`]): each
//! chunk is handed to the cache writer and returned to hyper in the same
//! poll, on the client connection's task. A miss then costs the same task
//! hand-overs as a plain relay (origin connection → client connection), not
//! one more through a task of its own; the writer appends on its own thread
//! behind a small queue (see `cistern_cache::Writer`).
//!
//! What the client sees:
//! - the newest chunk is held back until the next one arrives, and the last
//!   one until the origin body ended cleanly: a cut-short or stalled origin
//!   body fails the client's transfer before its end and is never committed;
//! - bodies up to [`COMMIT_BEFORE_LAST`], and replacements of stale entries
//!   (no flight to wait on), are committed before their last chunk is sent,
//!   so the client's next request finds them; larger ones get their last
//!   chunk first and are committed beside it (requests arriving meanwhile
//!   wait on the flight, which is released after the commit).
//!
//! A client that goes away does not waste the download: the rest of the
//! origin body is drained into the cache by a task of its own
//! ([`drain_into_cache`]), which also serves responses the client reads no
//! body of (HEAD, a 304 to its conditional).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cistern_cache::{FlightGuard, Writer};
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::body::ProxyBody;
use super::error::BoxError;
use super::handler::chain;
use super::metrics::DomainCounters;

/// Bodies up to this size are committed before their last chunk reaches the
/// client (hashing them takes a few milliseconds); larger ones reach the
/// client first, and requests arriving during their commit wait for it.
const COMMIT_BEFORE_LAST: u64 = 8 * 1024 * 1024;

/// How long the origin may send nothing before the transfer is given up.
const ORIGIN_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The client's body for a miss being stored. `len` is the announced
/// `Content-Length`, if any.
pub(super) fn body(
    origin: Incoming,
    writer: Writer,
    guard: Option<FlightGuard>,
    counter: Arc<DomainCounters>,
    tasks: TaskTracker,
    len: Option<u64>,
) -> ProxyBody {
    let tee = Tee {
        origin: Some(origin),
        writer: Some(writer),
        guard,
        held: None,
        counter,
        tasks,
    };
    let chunks = futures_util::stream::unfold(tee, |mut tee| async move {
        let item = tee.next().await?;
        Some((item, tee))
    });
    TeeBody {
        chunks: Box::pin(chunks),
        remaining: len,
    }
    .boxed_unsync()
}

/// Stores a whole origin body without a client reading it.
pub(super) async fn drain_into_cache(
    mut origin: Incoming,
    mut writer: Writer,
    guard: Option<FlightGuard>,
    counter: Arc<DomainCounters>,
) {
    loop {
        match tokio::time::timeout(ORIGIN_IDLE_TIMEOUT, origin.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if let Err(err) = writer.write_bytes(data).await {
                        tracing::warn!(error = %chain(&err), "cache write failed; not stored");
                        return;
                    }
                }
            }
            Ok(Some(Err(err))) => {
                origin_failed(&counter, &format!("origin body failed: {err}"));
                return;
            }
            Err(_) => {
                origin_failed(&counter, "origin body stalled");
                return;
            }
        }
    }
    let committed = commit(writer).await;
    if let Some(guard) = guard {
        guard.finish(committed);
    }
}

/// The state behind [`body`].
struct Tee {
    /// `None` once the origin body ended, cleanly or not: nothing is left
    /// to send or drain.
    origin: Option<Incoming>,
    /// `None` once the cache write failed (the client is still served).
    writer: Option<Writer>,
    guard: Option<FlightGuard>,
    /// The newest chunk, already written to the cache, not yet to the client.
    held: Option<Bytes>,
    counter: Arc<DomainCounters>,
    tasks: TaskTracker,
}

impl Tee {
    /// The next chunk for the client; `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            let origin = self.origin.as_mut()?;
            let data = match tokio::time::timeout(ORIGIN_IDLE_TIMEOUT, origin.frame()).await {
                Ok(None) => break,
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
                Ok(Some(Err(err))) => {
                    return Some(Err(self.fail(format!("origin body failed: {err}"))))
                }
                Err(_) => return Some(Err(self.fail("origin body stalled".to_owned()))),
            };
            // The chunk is queued before the first await inside, so a client
            // leaving here loses nothing the drain would need.
            if let Some(writer) = self.writer.as_mut() {
                if let Err(err) = writer.write_bytes(data.clone()).await {
                    tracing::warn!(error = %chain(&err), "cache write failed; the response is served from origin only");
                    self.writer = None;
                }
            }
            if let Some(previous) = self.held.replace(data) {
                return Some(Ok(previous));
            }
        }
        self.origin = None;
        let last = self.held.take();
        let Some(writer) = self.writer.take() else {
            return last.map(Ok);
        };
        let guard = self.guard.take();
        // A replacement for a stale entry has no flight for the next request
        // to wait on, so it commits first whatever its size.
        let commit_first = writer.written() <= COMMIT_BEFORE_LAST || guard.is_none();
        // On a task of its own, so that a client leaving now cannot cut the
        // commit short; it releases the flight when done.
        let committing = self.tasks.spawn(async move {
            let committed = commit(writer).await;
            if let Some(guard) = guard {
                guard.finish(committed);
            }
        });
        if commit_first {
            let _ = committing.await;
        }
        last.map(Ok)
    }

    /// The origin body failed: the write is aborted, followers go to the
    /// origin, and the client's transfer fails.
    fn fail(&mut self, message: String) -> BoxError {
        self.origin = None;
        self.writer = None;
        self.guard = None;
        self.held = None;
        origin_failed(&self.counter, &message);
        message.into()
    }
}

impl Drop for Tee {
    /// The client went away mid-body: the rest goes to the cache anyway.
    fn drop(&mut self) {
        let (Some(origin), Some(writer)) = (self.origin.take(), self.writer.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: the write is aborted
        };
        let drain = drain_into_cache(origin, writer, self.guard.take(), self.counter.clone());
        drop(self.tasks.spawn_on(drain, &runtime));
    }
}

/// Commits a finished write; whether it is now in the cache.
async fn commit(writer: Writer) -> bool {
    match writer.commit().await {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(error = %chain(&err), "cache commit failed; the response was served from origin");
            false
        }
    }
}

fn origin_failed(counter: &DomainCounters, message: &str) {
    counter.origin_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(error = %message, "origin transfer failed; not cached");
}

type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// The chunks as a body of known length, so that hyper frames it with the
/// origin's `Content-Length` and ends the message after the last byte.
struct TeeBody {
    chunks: Chunks,
    remaining: Option<u64>,
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(r) = self.remaining.as_mut() {
                    *r = r.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
