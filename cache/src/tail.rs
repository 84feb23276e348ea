//! Following a download in flight.
//!
//! When many jobs ask for the same uncached file at once, one request (the
//! single-flight leader, see `lock.rs`) downloads it while it is written to
//! a temp file. The others should not wait for the whole download before
//! their first byte (a 1 GB toolchain would keep them silent for the whole
//! transfer, past clients' read timeouts), nor each fetch it themselves:
//! they read the temp file behind the writer, as it grows.
//!
//! The writing thread publishes how much of the body is on disk
//! (`Progress`) and, at the end, the `xxh3-128` of the file it read back
//! for the commit. A [`TailReader`] hands out what is on disk, hashing it,
//! and holds its last piece back until the writer's verdict: a follower
//! gets the complete body only if it matches what was stored, and a download
//! that fails or is cut short breaks the follower's transfer too, as it does
//! the leader's. When only the *write* fails (a full disk), the bytes on
//! disk are handed out and [`TailReader::resume_from`] says where the
//! caller should continue from the origin, so the follower still gets the
//! whole file (as the leader does, straight from the origin). The same
//! happens when the download makes no progress for the lock timeout (the
//! origin stalled): followers must not hang with it.
//!
//! The leader's own client reads the origin's body as it arrives. Once a
//! follower joins ([`Tail::followed`]), the proxy hands the download over
//! to a task of its own, so that it goes at the origin's pace rather than
//! at that client's, and the client reads the rest like a follower
//! ([`Tail::reader_from`]).
//!
//! A body filled from the shared tier (see `shared.rs`) carries the
//! checksums of its 256 KiB blocks recorded by the runner that stored it:
//! readers then hand out only whole blocks that match, and at the first
//! that does not (or when the fill's source fails) they stop as after a
//! failed write, so the caller goes on from the origin: no byte of a
//! corrupt shared object reaches a client.
//!
//! Readers map the part of the temp file already written (windows of up to
//! 1 MiB, see `map.rs`) rather than copying it into buffers: each reader
//! hashes its pieces where the page cache holds them, and a plain-HTTP
//! client is sent them with `sendfile`, so fifty jobs reading along with one
//! download cost fifty hashes, not fifty copies on top. With
//! `map_reads` off they are read into buffers.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, StatusCode};
use tokio::sync::{watch, Notify};
use twox_hash::XxHash3_128 as Xxh3;

use crate::error::{Error, Result};
use crate::meta::Meta;

/// The block size of [`Meta::blocks`] checks.
const BLOCK: usize = crate::check::BLOCK;
/// Read size from the temp file (as for stored bodies).
const PIECE: usize = BLOCK;
/// Read size when hashing the part of the body a reader does not hand out.
const PREFIX_CHUNK: usize = 4 * PIECE;
/// Most bytes mapped at a time. Windows start on a piece boundary, which
/// is a multiple of any page size. Smaller than a stored body's (`read.rs`):
/// many requests may read along with one download, and each keeps its
/// window and the one of the piece it holds back mapped (twenty readers
/// with 4 MiB windows showed 180 MB of resident mapped pages).
const WINDOW: u64 = 4 * PIECE as u64;

/// How far the writer got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Body bytes written to the temp file.
    pub(crate) written: u64,
    pub(crate) end: End,
}

/// How the write ended, if it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum End {
    #[default]
    Running,
    /// Complete; the `xxh3-128` of the file as it was read back.
    Stored(u128),
    /// The download failed (the origin's body broke or was cut short).
    Failed,
    /// The download was fine but writing it failed (a full disk): what is
    /// on disk is good, the rest must come from elsewhere.
    WriteFailed,
}

/// A download being written to the store, as followers see it.
#[derive(Clone)]
pub struct Tail {
    /// The stored response's head and caching policy.
    meta: Arc<Meta>,
    file: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
    key: String,
    /// How long a reader waits for progress before it goes on without the
    /// download (the store's lock timeout).
    stall: Duration,
    /// Set, and notified, when a follower's reader is made.
    followed: Arc<(AtomicBool, Notify)>,
    /// Readers map the file (see the module docs).
    map_reads: bool,
    /// For a body filled from the shared tier: the size and `xxh3-64` of
    /// each block that the runner which stored it recorded. Readers then
    /// hand out only whole blocks that match, and go on from the origin at
    /// the first that does not (see [`TailReader::resume_from`]).
    expected: Option<Arc<(u64, Vec<u64>)>>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("key", &self.key)
            .field("progress", &*self.progress.borrow())
            .finish()
    }
}

impl Tail {
    pub(crate) fn new(
        meta: Meta,
        file: std::fs::File,
        progress: watch::Receiver<Progress>,
        key: String,
        stall: Duration,
        map_reads: bool,
    ) -> Tail {
        Tail {
            meta: Arc::new(meta),
            file: Arc::new(file),
            progress,
            key,
            stall,
            followed: Arc::default(),
            map_reads,
            expected: None,
        }
    }

    /// Readers check each block against `blocks` (of a body of `size`
    /// bytes) before they hand it out.
    pub(crate) fn expect_blocks(&mut self, size: u64, blocks: Vec<u64>) {
        self.expected = Some(Arc::new((size, blocks)));
    }

    /// Waits until a follower reads along (returns at once if one did).
    pub async fn followed(&self) {
        let (flag, notify) = &*self.followed;
        loop {
            let notified = notify.notified();
            if flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The origin's status.
    pub fn status(&self) -> StatusCode {
        self.meta.status
    }

    /// The origin's response headers, as they are stored.
    pub fn headers(&self) -> &HeaderMap {
        &self.meta.headers
    }

    /// What is being stored with the body (the response's caching policy
    /// tells whether it suits another request: see `Policy::selects`).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// A follower's reader of the body from its first byte.
    pub fn reader(&self) -> TailReader {
        let (flag, notify) = &*self.followed;
        flag.store(true, Ordering::Release);
        notify.notify_waiters();
        self.reader_from(0)
    }

    /// A reader of the body from `offset`, for the client that received
    /// the bytes before it straight from the origin (the download's leader,
    /// once the download was handed over). Those bytes are still hashed,
    /// from the file, so that the check at the end covers the whole body.
    pub fn reader_from(&self, offset: u64) -> TailReader {
        TailReader {
            tail: self.clone(),
            offset,
            hashed: 0,
            hasher: Box::default(),
            held: None,
            window: None,
            map_reads: self.map_reads,
            done: false,
            stalled: false,
            resumable: false,
        }
    }
}

/// Reads a download in flight, as far as it is written; see the module docs.
pub struct TailReader {
    tail: Tail,
    offset: u64,
    /// Bytes of the file hashed so far: `offset` once the part before the
    /// reader's start was hashed.
    hashed: u64,
    hasher: Box<Xxh3>,
    /// The last piece read, handed out once the next one is read or the
    /// write's check matched.
    held: Option<Bytes>,
    /// The part of the file mapped last, and its offset in the file.
    window: Option<(Bytes, u64)>,
    /// Still mapping (off once the kernel could not).
    map_reads: bool,
    done: bool,
    /// The download made no progress for the tail's `stall` time.
    stalled: bool,
    /// The write failed or stalled; the body goes on from the origin at
    /// `offset`.
    resumable: bool,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader")
            .field("tail", &self.tail)
            .field("offset", &self.offset)
            .finish()
    }
}

impl TailReader {
    /// The next chunk; `Ok(None)` once the whole body was handed out and
    /// matched what was stored; an error if the download failed or the
    /// bytes read do not match.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let progress = *self.tail.progress.borrow_and_update();
            if self.stalled {
                return self.give_up_on_download();
            }
            if self.hashed < self.offset {
                if progress.written >= self.offset {
                    self.hash_prefix().await?;
                    continue;
                }
            } else if let Some(expected) = self.tail.expected.clone() {
                // Whole blocks only, each checked before it is handed out.
                let (size, blocks) = &*expected;
                let block = self.offset / BLOCK as u64;
                let block_end = ((block + 1) * BLOCK as u64).min(*size);
                if self.offset < block_end && progress.written >= block_end {
                    let want_len = block_end - self.offset;
                    let data = self.read(block_end).await?;
                    let whole = data.len() as u64 == want_len;
                    let want = usize::try_from(block).ok().and_then(|b| blocks.get(b));
                    if !whole || !crate::check::block_matches(want, &data) {
                        self.offset -= data.len() as u64;
                        tracing::warn!(key = %self.tail.key, offset = self.offset, "a block of a shared-tier body does not match its check; going on from the origin");
                        self.stalled = true;
                        continue;
                    }
                    self.hashed += data.len() as u64;
                    self.hasher.write(&data);
                    if let Some(previous) = self.held.replace(data) {
                        return Ok(Some(previous));
                    }
                    continue;
                }
            } else if self.offset < progress.written {
                let data = self.read(progress.written).await?;
                self.hashed += data.len() as u64;
                self.hasher.write(&data);
                if let Some(previous) = self.held.replace(data) {
                    return Ok(Some(previous));
                }
                continue;
            }
            match progress.end {
                End::Stored(check) if self.hasher.finish_128() == check => {
                    self.done = true;
                    return Ok(self.held.take());
                }
                End::Stored(_) => return Err(self.fail()),
                End::Failed => return Err(self.aborted()),
                End::WriteFailed => return self.give_up_on_download(),
                End::Running => {
                    let changed = self.tail.progress.changed();
                    match tokio::time::timeout(self.tail.stall, changed).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) if self.tail.progress.borrow().end == End::Running => {
                            // The writer is gone without a verdict.
                            return Err(self.aborted());
                        }
                        Ok(Err(_)) => {}
                        Err(_) => {
                            // The origin stopped sending (or, before the
                            // download was handed over, its first client
                            // stopped reading).
                            tracing::info!(key = %self.tail.key, offset = self.offset, "download in flight stalled");
                            self.stalled = true;
                        }
                    }
                }
            }
        }
    }

    /// Hands out what was read, then ends with an error that
    /// [`TailReader::resume_from`] answers.
    fn give_up_on_download(&mut self) -> Result<Option<Bytes>> {
        if let Some(held) = self.held.take() {
            return Ok(Some(held));
        }
        self.resumable = true;
        Err(self.aborted())
    }

    /// After [`TailReader::chunk`] failed because the *write* failed (not
    /// the download) or the download stalled: the offset the body must go
    /// on from, every byte before it having been handed out. Those bytes
    /// could not be checked against a stored file (there is none yet); they
    /// are what was received and written.
    pub fn resume_from(&self) -> Option<u64> {
        self.resumable.then_some(self.offset)
    }

    /// Hashes the file up to the reader's start.
    async fn hash_prefix(&mut self) -> Result<()> {
        let file = self.tail.file.clone();
        let (from, to) = (self.hashed, self.offset);
        let mut hasher = std::mem::take(&mut self.hasher);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; PREFIX_CHUNK];
            let mut at = from;
            while at < to {
                let len = usize::try_from(to - at)
                    .unwrap_or(PREFIX_CHUNK)
                    .min(PREFIX_CHUNK);
                file.read_exact_at(&mut buf[..len], at)?;
                hasher.write(&buf[..len]);
                at += len as u64;
            }
            Ok::<_, std::io::Error>(hasher)
        })
        .await
        .map_err(|e| Error::io("following a download", std::io::Error::other(e)))?
        .map_err(|e| Error::io("following a download", e))?;
        self.hasher = hasher;
        self.hashed = to;
        Ok(())
    }

    /// The next piece, up to `written`: a slice of the window that holds
    /// `offset`, mapping the next one when it is past the last.
    async fn read(&mut self, written: u64) -> Result<Bytes> {
        loop {
            if let Some((data, start)) = &self.window {
                let end = start + data.len() as u64;
                if (*start..end).contains(&self.offset) {
                    let from = (self.offset - start) as usize;
                    let len = (end.min(written) - self.offset) as usize;
                    let piece = data.slice(from..from + len.min(PIECE));
                    self.offset += piece.len() as u64;
                    return Ok(piece);
                }
            }
            self.window = None;
            if !self.map_reads {
                return self.read_copy(written).await;
            }
            let start = self.offset - self.offset % PIECE as u64;
            let len = usize::try_from((written - start).min(WINDOW)).unwrap_or(PIECE);
            let file = self.tail.file.clone();
            // Only bytes already written are mapped, and the writer only
            // appends to the file: the window's pages stay as they are.
            let mapped =
                tokio::task::spawn_blocking(move || crate::map::map(&file, start, len)?.populate())
                    .await
                    .map_err(|e| Error::io("following a download", std::io::Error::other(e)))?;
            match mapped {
                Ok(data) => self.window = Some((data, start)),
                // Read instead: a real I/O error shows there too.
                Err(e) => {
                    tracing::debug!(key = %self.tail.key, error = %e, "cannot map a download in flight; reading it");
                    self.map_reads = false;
                }
            }
        }
    }

    /// Reads the next piece, up to `written`, into a buffer.
    async fn read_copy(&mut self, written: u64) -> Result<Bytes> {
        let len = usize::try_from(written - self.offset)
            .unwrap_or(PIECE)
            .min(PIECE);
        let file = self.tail.file.clone();
        let offset = self.offset;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset).map(|()| buf)
        })
        .await
        .map_err(|e| Error::io("following a download", std::io::Error::other(e)))?
        .map_err(|e| Error::io("following a download", e))?;
        self.offset += read.len() as u64;
        Ok(Bytes::from(read))
    }

    fn fail(&mut self) -> Error {
        self.done = true;
        tracing::warn!(key = %self.tail.key, "a download in flight read back differently from what was stored");
        Error::Corrupt {
            key: self.tail.key.clone(),
        }
    }

    fn aborted(&mut self) -> Error {
        self.done = true;
        Error::WriteAborted {
            key: self.tail.key.clone(),
        }
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            match reader.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), reader)),
                Ok(None) => None,
                Err(e) => Some((Err(e), reader)),
            }
        })
    }
}
