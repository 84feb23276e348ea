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
//!
//! Nor does a client that reads slowly, or stops reading, hold back the
//! requests reading along with its download: once one joins
//! (`Tail::followed`), the same task takes the origin body over and drains
//! it at the origin's pace, and the client reads the rest from the temp
//! file like the others (`Tail::reader_from`, checked at the end against
//! the stored file as theirs are). A lone client keeps the direct path,
//! which costs one copy less.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cistern_cache::{FlightGuard, Tail, TailReader, Writer};
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::metrics::DomainCounters;
use crate::http::error::chain;
use crate::http::{BoxError, ProxyBody};

/// Bodies up to this size are committed before their last chunk reaches the
/// client (hashing them takes a few milliseconds); larger ones reach the
/// client first, and requests arriving during their commit wait for it.
const COMMIT_BEFORE_LAST: u64 = 8 * 1024 * 1024;

/// How long the origin may send nothing before the transfer is given up.
const ORIGIN_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Frames of a body, boxed.
pub(super) type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>;

/// Makes the rest of the client's body from a reader of the download from
/// where the client got to (the handler's read-along body, which also knows
/// how to go on from the origin should the download's write fail).
pub(super) type Rest = Box<dyn FnOnce(TailReader) -> Frames + Send>;

/// The client's body for a miss being stored. `len` is the announced
/// `Content-Length`, if any.
pub(super) fn body(
    origin: Incoming,
    writer: Writer,
    guard: Option<FlightGuard>,
    counter: Arc<DomainCounters>,
    tasks: TaskTracker,
    len: Option<u64>,
    rest: Rest,
) -> ProxyBody {
    let tail = writer.tail();
    let tee = Tee {
        origin: Some(origin),
        writer: Some(writer),
        guard,
        held: None,
        counter: counter.clone(),
        tasks: tasks.clone(),
    };
    let state = Arc::new(tokio::sync::Mutex::new(State::Teeing(Box::new(tee))));
    let gone = CancellationToken::new();
    tasks.spawn(take_over(
        state.clone(),
        tail.clone(),
        gone.clone(),
        counter,
    ));
    let client = ClientSide {
        state,
        tail,
        rest: Some(rest),
        reading: None,
    };
    let chunks = futures_util::stream::unfold(client, |mut client| async move {
        let item = client.next().await?;
        Some((item, client))
    });
    TeeBody {
        chunks: Box::pin(chunks),
        remaining: len,
        _gone: gone.drop_guard(),
    }
    .boxed_unsync()
}

/// Who reads the origin body of a miss.
enum State {
    /// The client's body, as it is polled.
    Teeing(Box<Tee>),
    /// [`take_over`]'s task; the client reads the download from this offset.
    HandedOff(u64),
}

/// Hands the download over to this task when a request reads along with it
/// or the client goes away (see the module docs).
async fn take_over(
    state: Arc<tokio::sync::Mutex<State>>,
    tail: Tail,
    gone: CancellationToken,
    counter: Arc<DomainCounters>,
) {
    tokio::select! {
        () = tail.followed() => {}
        () = gone.cancelled() => {}
    }
    // Waits for a chunk the client's body is fetching: the client has all
    // bytes before the held chunk.
    let mut state = state.lock().await;
    let State::Teeing(tee) = &mut *state else {
        return;
    };
    // Ended, failed, or no longer written (then the client keeps reading
    // the origin itself): nothing to take over.
    if tee.origin.is_none() || tee.writer.is_none() {
        return;
    }
    let (Some(origin), Some(writer)) = (tee.origin.take(), tee.writer.take()) else {
        return;
    };
    let guard = tee.guard.take();
    let held = tee.held.take().map_or(0, |h| h.len() as u64);
    *state = State::HandedOff(writer.written() - held);
    drop(state);
    drain_into_cache(origin, writer, guard, counter).await;
}

/// The client's side of [`body`].
struct ClientSide {
    state: Arc<tokio::sync::Mutex<State>>,
    tail: Tail,
    rest: Option<Rest>,
    /// The rest of the body from the download, once it was handed over.
    reading: Option<Frames>,
}

impl ClientSide {
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if let Some(reading) = self.reading.as_mut() {
                return match reading.next().await? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => Some(Ok(data)),
                        Err(_) => continue,
                    },
                    Err(err) => Some(Err(err)),
                };
            }
            let mut state = self.state.lock().await;
            let offset = match &mut *state {
                State::Teeing(tee) => return tee.next().await,
                State::HandedOff(offset) => *offset,
            };
            drop(state);
            let rest = self.rest.take()?;
            self.reading = Some(rest(self.tail.reader_from(offset)));
        }
    }
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
                        write_failed(&err);
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
                    write_failed(&err);
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

/// A cache write stopped; the client goes on being served from the origin.
fn write_failed(err: &cistern_cache::Error) {
    if matches!(err, cistern_cache::Error::TooLarge { .. }) {
        tracing::info!(error = %err, "served from origin only");
    } else {
        tracing::warn!(error = %chain(err), "cache write failed; the response is served from origin only");
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
    /// Tells [`take_over`] the client went away (dropped after `chunks`,
    /// which may hold the state's lock).
    _gone: DropGuard,
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
