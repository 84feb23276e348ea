//! One log event per request: listener, peer, method, path, status, bytes each
//! way and duration. The event is written when the last part of the exchange
//! ends (response body finished or dropped, hijacked stream closed), so a
//! `docker logs -f` stream is logged once, with its real size and duration.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

/// Shared record of one request; logs itself on drop.
#[derive(Debug)]
pub struct RequestRecord {
    pub listener: Arc<str>,
    pub peer: String,
    pub method: String,
    pub path: String,
    started: Instant,
    status: AtomicU16,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    upgraded: AtomicBool,
    complete: AtomicBool,
    /// The endpoint group counted in metrics, once the route is known.
    group: OnceLock<&'static str>,
}

impl RequestRecord {
    pub fn new(listener: Arc<str>, peer: String, method: String, path: String) -> Arc<Self> {
        Arc::new(Self {
            listener,
            peer,
            method,
            path,
            started: Instant::now(),
            status: AtomicU16::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            complete: AtomicBool::new(false),
            group: OnceLock::new(),
        })
    }

    /// Records the endpoint group ([`super::metrics::group_of`]).
    pub fn set_group(&self, group: &'static str) {
        let _ = self.group.set(group);
    }

    /// The endpoint group, if the request was classified.
    pub fn group(&self) -> Option<&'static str> {
        self.group.get().copied()
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Marks the response as delivered in full (body end or stream closed
    /// cleanly); otherwise the log says it was cut short.
    pub fn set_complete(&self) {
        self.complete.store(true, Ordering::Relaxed);
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let status = self.status.load(Ordering::Relaxed);
        tracing::info!(
            target: "cistern::access",
            listener = %self.listener,
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            status,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out.load(Ordering::Relaxed),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            upgraded = self.upgraded.load(Ordering::Relaxed),
            complete = self.complete.load(Ordering::Relaxed),
            "request"
        );
    }
}

/// Which way a [`Counted`] body flows.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client to daemon.
    In,
    /// Daemon to client.
    Out,
}

/// A body that counts its bytes into a [`RequestRecord`] and passes frames on
/// untouched, so back-pressure and streaming are those of the inner body.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    record: Arc<RequestRecord>,
    direction: Direction,
}

impl<B> Counted<B> {
    pub fn new(inner: B, record: Arc<RequestRecord>, direction: Direction) -> Self {
        Self {
            inner,
            record,
            direction,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.remaining() as u64;
                    match self.direction {
                        Direction::In => self.record.add_in(n),
                        Direction::Out => self.record.add_out(n),
                    }
                }
                // A body of known length may never be polled past its last
                // frame; it ended if the inner body says so.
                if matches!(self.direction, Direction::Out) && self.inner.is_end_stream() {
                    self.record.set_complete();
                }
            }
            Poll::Ready(None) => {
                if let Direction::Out = self.direction {
                    self.record.set_complete();
                }
            }
            _ => {}
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
