//! Reading bodies back: whole, streaming, or a byte range.
//!
//! Every read is checked against hashes recorded at commit: the `xxh3-64`
//! of each 256 KiB block and the `xxh3-128` of the whole body, or, for
//! entries stored before those existed, the SHA-256 content address (see
//! `check.rs`).
//!
//! - [`Body::Full`]: small bodies, read and checked whole on a blocking
//!   thread before the hit is reported, so a corrupt one is a clean miss.
//! - [`BodyReader`]: a blocking thread maps the file a window at a time
//!   (`map.rs`, two windows queued) and the reader checks each block as it
//!   hands it out; where mapping is off or not possible, the thread reads
//!   blocks into buffers and checks them. Either way disk reads run beside
//!   the socket writes through a bounded channel and memory stays flat (at
//!   most `READ_AHEAD` blocks per stream). A block
//!   that fails its check is never handed over: the entry is dropped and
//!   [`BodyReader::chunk`] returns [`Error::Corrupt`], so the proxy aborts
//!   the response short of its length (the client sees a broken transfer)
//!   and the next request refetches. Without block checksums the last
//!   piece is held back until the whole body's hash was checked instead.
//! - [`RangeReader`]: reads only the blocks the range touches, each whole
//!   and checked before any of its bytes is handed out. Without block
//!   checksums, the first ranged read of an integrity in a process checks
//!   the whole file once; later ranges of it seek straight away.
//!
//!
//! A body of at most `StoreConfig::memory_max_object` bytes that was read
//! whole and matched is handed to the memory tier (`hot.rs`), which serves
//! its repeats without reading or hashing it again.
//!
//! These are the store's hit handlers, and they know nothing of the store:
//! each reads the file its `Source` names, and tells the source's
//! `Verdicts` (the store) what it found: a body that matched, or one that
//! did not, whose entry the store then drops.

use std::io::{Read, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::check::{block_checks, block_matches, Verifier, BLOCK};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::storage::Verdicts;

/// Read size of ranges from disk; large enough that per-read overhead (a
/// syscall, a hyper frame) is amortised.
const CHUNK: usize = 1024 * 1024;
/// Read size of streamed bodies: small enough that the first bytes leave
/// while the rest is still being read and hashed (a 1 MiB body goes out in
/// four pieces, its reading and sending overlapped), large enough that the
/// hand-over per piece is amortised.
const PIECE: usize = BLOCK;
/// Pieces a streaming reader may read ahead of the client (4 MiB).
const READ_AHEAD: usize = 16;

/// Where a stored body is read from, and whom its reader tells what it
/// found.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The body's content file.
    pub(crate) path: PathBuf,
    /// Stream from memory maps of the file (`StoreConfig::map_reads`).
    pub(crate) map_reads: bool,
    /// Keep the body, once read whole and matched, for the memory tier.
    pub(crate) keep: bool,
    /// Told what the reader found (the store).
    pub(crate) verdicts: Arc<dyn Verdicts>,
}

/// The recorded block checksums of an entry, if it has a well-formed list
/// for its size.
fn entry_blocks(entry: &Entry) -> Option<Vec<u64>> {
    block_checks(entry.meta.blocks.as_deref(), entry.size())
}

/// A verifier of an entry's whole body.
fn verifier(entry: &Entry) -> Verifier {
    Verifier::new(entry.meta.check.as_deref(), &entry.integrity)
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

fn joined<T>(r: std::result::Result<T, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| Error::io("reading a body", std::io::Error::other(e)))
}

/// Reads and verifies a whole body (for small ones) from `path`.
pub(crate) async fn read_whole(
    path: PathBuf,
    entry: &Entry,
    verdicts: &dyn Verdicts,
) -> Result<Bytes> {
    let mut verifier = verifier(entry);
    let size = entry.size();
    let read = joined(
        tokio::task::spawn_blocking(move || {
            let data = std::fs::read(path)?;
            verifier.update(&data);
            let ok = data.len() as u64 == size && verifier.matches();
            Ok::<_, std::io::Error>((data, ok))
        })
        .await,
    )?;
    match read {
        Ok((data, true)) => {
            let data = Bytes::from(data);
            verdicts.matched(&entry.integrity, Some(data.clone()));
            Ok(data)
        }
        Ok((_, false)) => Err(verdicts.corrupt(&entry.key).await),
        Err(e) if not_found(&e) => Err(verdicts.corrupt(&entry.key).await),
        Err(e) => Err(Error::io("reading a body", e)),
    }
}

/// A body as it arrives from the blocking reader.
enum Piece {
    Data(Bytes),
    /// A mapped window of the file, not yet checked: the reader checks its
    /// blocks one by one as it hands them out (`produce_mapped`).
    Window(Bytes),
    /// End of file: whether the body matched its size and hash.
    End(bool),
    Failed(std::io::Error),
}

/// Reads `file` in pieces, checking each, until EOF or the receiver is gone.
///
/// With block checksums (`blocks`), each piece is one block and is checked
/// before it is handed over: a corrupt block is never sent, the reader ends
/// with a failed check instead. Without them, the whole body's hash is
/// checked at its end, so each piece is handed over only once the next one
/// was read, and the last one only with the verdict. Either way a body that
/// fails its check never reaches the client whole: the client's transfer
/// breaks short of its `Content-Length`.
fn produce(
    file: std::fs::File,
    mut verifier: Verifier,
    blocks: Option<Vec<u64>>,
    size: u64,
    map_reads: bool,
    tx: mpsc::Sender<Piece>,
) {
    let file = std::sync::Arc::new(file);
    if map_reads && blocks.is_some() {
        match produce_mapped(&file, size, &tx) {
            Mapped::Done => return,
            Mapped::Unsupported => {}
        }
    }
    let mut total = 0u64;
    let mut index = 0usize;
    let mut held: Option<Bytes> = None;
    loop {
        let mut buf = Vec::with_capacity(PIECE);
        match (&*file).take(PIECE as u64).read_to_end(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                let ready = match &blocks {
                    Some(blocks) => {
                        if !block_matches(blocks.get(index), &buf) {
                            let _ = tx.blocking_send(Piece::End(false));
                            return;
                        }
                        index += 1;
                        Some(Bytes::from(buf))
                    }
                    None => {
                        verifier.update(&buf);
                        held.replace(Bytes::from(buf))
                    }
                };
                if let Some(piece) = ready {
                    if tx.blocking_send(Piece::Data(piece)).is_err() {
                        return;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Piece::Failed(e));
                return;
            }
        }
    }
    let matched = total == size
        && match &blocks {
            Some(blocks) => index == blocks.len(),
            None => verifier.matches(),
        };
    if matched {
        if let Some(last) = held {
            if tx.blocking_send(Piece::Data(last)).is_err() {
                return;
            }
        }
    }
    let _ = tx.blocking_send(Piece::End(matched));
}

/// Whether [`produce_mapped`] served the body.
enum Mapped {
    Done,
    /// The file cannot be mapped here (found before anything was sent):
    /// read it instead.
    Unsupported,
}

/// Bytes mapped at a time by [`produce_mapped`] (a multiple of the page
/// size). The next window is mapped, and its reading started, while this
/// one is checked and sent.
const WINDOW: usize = 16 * BLOCK;

/// Streams a body with block checksums from memory maps of its file (see
/// `map.rs`): this thread maps and populates windows (reading them from
/// disk if need be) and hands them over unchecked; [`BodyReader`] checks
/// each block where the page cache holds it just before it hands the block
/// out as a slice of the map. Over TLS, the encryption right after the
/// check reads memory the check brought into the CPU's cache (measured
/// with plain writes: about 20% more throughput and 15% less CPU than
/// checking here, a window ahead of the socket); a plain connection sends
/// the checked slice with `sendfile` and copies nothing (see
/// [`crate::map::mapped_source`]).
fn produce_mapped(
    file: &std::sync::Arc<std::fs::File>,
    size: u64,
    tx: &mpsc::Sender<Piece>,
) -> Mapped {
    let fail = |piece: Piece| {
        let _ = tx.blocking_send(piece);
        Mapped::Done
    };
    match file.metadata() {
        Ok(m) if m.len() == size => {}
        // Cut short or grown: not the body that was stored.
        Ok(_) => return fail(Piece::End(false)),
        Err(e) => return fail(Piece::Failed(e)),
    }
    let window = |offset: u64| {
        let len = (size - offset).min(WINDOW as u64) as usize;
        crate::map::map(file, offset, len)
    };
    let mut next = match window(0) {
        Ok(mapped) => Some(mapped),
        Err(_) => return Mapped::Unsupported,
    };
    let mut offset = 0u64;
    while let Some(mapped) = next.take() {
        let len = (size - offset).min(WINDOW as u64) as usize;
        let following = offset + len as u64;
        if following < size {
            match window(following) {
                Ok(mapped) => next = Some(mapped),
                Err(e) => return fail(Piece::Failed(e)),
            }
        }
        let data = match mapped.populate() {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported && offset == 0 => {
                return Mapped::Unsupported
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return fail(Piece::End(false))
            }
            Err(e) => return fail(Piece::Failed(e)),
        };
        if tx.blocking_send(Piece::Window(data)).is_err() {
            return Mapped::Done;
        }
        offset = following;
    }
    fail(Piece::End(true))
}

/// A body ready to send.
#[derive(Debug)]
pub enum Body {
    /// Already read and verified.
    Full(Bytes),
    /// Streamed from disk, verified at the end.
    Stream(Box<BodyReader>),
}

impl Body {
    /// Reads the whole body into memory (tests and small bodies only).
    pub async fn bytes(self) -> Result<Bytes> {
        match self {
            Body::Full(b) => Ok(b),
            Body::Stream(mut r) => {
                let mut out = BytesMut::new();
                while let Some(chunk) = r.chunk().await? {
                    out.extend_from_slice(&chunk);
                }
                Ok(out.freeze())
            }
        }
    }
}

/// Streams a stored body, verifying its hash at the end.
pub struct BodyReader {
    verdicts: Arc<dyn Verdicts>,
    key: CacheKey,
    integrity: cacache::Integrity,
    /// The first piece, read before the reader was handed out.
    first: Option<Piece>,
    rx: Option<mpsc::Receiver<Piece>>,
    /// The pieces handed out so far, when the body is small enough to be
    /// kept in memory once it has matched its hashes.
    kept: Option<Vec<Bytes>>,
    /// Bytes handed out so far, and the body's size. Only checked bytes are
    /// handed out (blocks one by one, or the last piece after the whole
    /// body's check), so once `size` bytes went out the body matched: a
    /// client that stops reading at its `Content-Length`, as hyper does,
    /// never asks for the end of the stream.
    sent: u64,
    size: u64,
    /// The body's block checksums, for mapped windows, which are checked
    /// here block by block as they are handed out.
    blocks: Option<Vec<u64>>,
    /// The current window and the offset of its next block.
    window: Option<(Bytes, usize)>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("key", &self.key)
            .field("done", &self.rx.is_none())
            .finish()
    }
}

impl BodyReader {
    /// Opens the body on the reading thread and waits for its first piece,
    /// so that a missing content file is reported here (a clean miss)
    /// rather than mid-response, at the cost of one thread hand-over.
    pub(crate) async fn open(source: Source, entry: &Entry) -> Result<Self> {
        let Source {
            path,
            map_reads,
            keep,
            verdicts,
        } = source;
        // Mapped windows are 16 blocks each: two queued are enough.
        let (tx, mut rx) = mpsc::channel(if map_reads { 2 } else { READ_AHEAD });
        let verifier = verifier(entry);
        let blocks = entry_blocks(entry);
        let size = entry.size();
        let checks = blocks.clone().filter(|_| map_reads);
        // Dropped reader: the channel closes and the thread stops at its
        // next piece.
        drop(tokio::task::spawn_blocking(
            move || match std::fs::File::open(path) {
                Ok(file) => produce(file, verifier, blocks, size, map_reads, tx),
                Err(e) => drop(tx.blocking_send(Piece::Failed(e))),
            },
        ));
        let first = match rx.recv().await {
            Some(Piece::Failed(e)) if not_found(&e) => {
                return Err(verdicts.corrupt(&entry.key).await)
            }
            Some(Piece::Failed(e)) => return Err(Error::io("opening a body", e)),
            // Failed its check before a byte was handed out.
            Some(Piece::End(false)) => return Err(verdicts.corrupt(&entry.key).await),
            first => first,
        };
        let kept = keep.then(Vec::new);
        let mut reader = BodyReader {
            verdicts,
            key: entry.key.clone(),
            integrity: entry.integrity.clone(),
            first,
            rx: Some(rx),
            kept,
            sent: 0,
            size,
            blocks: checks,
            window: None,
        };
        // A mapped body's first block is checked here too, so that a
        // corrupt one is a clean miss rather than a broken transfer.
        match reader.first.take() {
            Some(Piece::Window(data)) => {
                reader.window = Some((data, 0));
                match reader.next_block() {
                    Some(Ok(block)) => reader.first = Some(Piece::Data(block)),
                    Some(Err(())) => return Err(reader.verdicts.corrupt(&reader.key).await),
                    None => {}
                }
            }
            other => reader.first = other,
        }
        Ok(reader)
    }

    /// The next block of the current window, checked; `None` when the
    /// window is used up.
    fn next_block(&mut self) -> Option<std::result::Result<Bytes, ()>> {
        let (data, at) = self.window.as_mut()?;
        if *at >= data.len() {
            self.window = None;
            return None;
        }
        let end = (*at + BLOCK).min(data.len());
        let block = data.slice(*at..end);
        *at = end;
        let index = usize::try_from(self.sent / BLOCK as u64).ok()?;
        let want = self.blocks.as_ref().and_then(|b| b.get(index));
        if !block_matches(want, &block) {
            self.window = None;
            return Some(Err(()));
        }
        Some(Ok(block))
    }

    /// The next chunk; `Ok(None)` once the whole body was read *and* matched
    /// its hash; [`Error::Corrupt`] if it did not.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        let piece = loop {
            let piece = match self.first.take() {
                Some(first) => Some(first),
                None => {
                    match self.next_block() {
                        Some(Ok(block)) => break Some(Piece::Data(block)),
                        Some(Err(())) => break Some(Piece::End(false)),
                        None => {}
                    }
                    let Some(rx) = self.rx.as_mut() else {
                        return Ok(None);
                    };
                    rx.recv().await
                }
            };
            match piece {
                Some(Piece::Window(data)) if self.blocks.is_some() => {
                    self.window = Some((data, 0));
                }
                // The end: every byte must have been handed out (for mapped
                // windows, this is where their checks are complete).
                Some(Piece::End(true)) if self.sent != self.size => {
                    break Some(Piece::End(false));
                }
                piece => break piece,
            }
        };
        if let Some(Piece::Data(data)) = piece {
            self.sent += data.len() as u64;
            if let Some(kept) = self.kept.as_mut() {
                kept.push(data.clone());
            }
            if self.sent == self.size {
                self.matched();
            }
            return Ok(Some(data));
        }
        self.rx = None;
        match piece {
            Some(Piece::End(true)) => {
                self.matched();
                Ok(None)
            }
            Some(Piece::End(false)) => Err(self.verdicts.corrupt(&self.key).await),
            Some(Piece::Failed(e)) => Err(Error::io("reading a body", e)),
            Some(Piece::Data(_) | Piece::Window(_)) | None => Err(Error::io(
                "reading a body",
                std::io::Error::other("the body reader stopped"),
            )),
        }
    }

    /// The whole body was handed out, checked.
    fn matched(&mut self) {
        let kept = self.kept.take().map(|kept| Bytes::from(kept.concat()));
        self.verdicts.matched(&self.integrity, kept);
    }

    /// The body as a stream of chunks, e.g. for `http_body_util::StreamBody`.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut reader = state?;
            match reader.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// Streams bytes `start..=end` of a stored body.
#[derive(Debug)]
pub struct RangeReader {
    /// The range itself, when the body is held in memory (verified).
    memory: Option<Bytes>,
    /// The content file, positioned for the next read; `None` for a range
    /// from memory.
    file: Option<tokio::fs::File>,
    remaining: u64,
    /// With block checksums: the blocks the range touches are read whole
    /// and checked before any of their bytes is handed out.
    checked: Option<CheckedRange>,
}

#[derive(Debug)]
struct CheckedRange {
    verdicts: Arc<dyn Verdicts>,
    key: CacheKey,
    blocks: Vec<u64>,
    size: u64,
    /// The next byte of the range to hand out.
    next: u64,
}

impl RangeReader {
    /// Checks that `start..=end` lies within a body of `size` bytes.
    pub(crate) fn satisfiable(size: u64, start: u64, end: u64) -> Result<()> {
        if start > end || end >= size {
            return Err(Error::RangeNotSatisfiable { start, end, size });
        }
        Ok(())
    }

    /// The range `start..=end` (satisfiable) of a verified body held in
    /// memory.
    pub(crate) fn in_memory(body: &Bytes, start: u64, end: u64) -> Self {
        let range = usize::try_from(start).unwrap_or(usize::MAX)
            ..usize::try_from(end).map_or(usize::MAX, |end| end.saturating_add(1));
        RangeReader {
            memory: Some(body.slice(range)),
            file: None,
            remaining: end - start + 1,
            checked: None,
        }
    }

    /// Opens the range `start..=end` of the body from disk. Without block
    /// checksums, a body not `verified` yet in this process is first read
    /// and checked whole.
    pub(crate) async fn open(
        source: Source,
        entry: &Entry,
        start: u64,
        end: u64,
        verified: bool,
    ) -> Result<Self> {
        let size = entry.size();
        Self::satisfiable(size, start, end)?;
        let blocks = entry_blocks(entry);
        if blocks.is_none() && !verified {
            let mut whole = BodyReader::open(source.clone(), entry).await?;
            while whole.chunk().await?.is_some() {}
        }
        let Source { path, verdicts, .. } = source;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(verdicts.corrupt(&entry.key).await)
            }
            Err(e) => return Err(Error::io("opening a body for a range", e)),
        };
        let from = match blocks {
            Some(_) => start - start % BLOCK as u64,
            None => start,
        };
        file.seek(SeekFrom::Start(from))
            .await
            .map_err(|e| Error::io("seeking in a body", e))?;
        Ok(RangeReader {
            memory: None,
            file: Some(file),
            remaining: end - start + 1,
            checked: blocks.map(|blocks| CheckedRange {
                verdicts,
                key: entry.key.clone(),
                blocks,
                size,
                next: start,
            }),
        })
    }

    /// The next block of a checked range, cut to the range.
    async fn checked_chunk(&mut self) -> Result<Bytes> {
        let (Some(c), Some(file)) = (self.checked.as_mut(), self.file.as_mut()) else {
            return Err(Error::io(
                "reading a range",
                std::io::Error::other("no block checksums"),
            ));
        };
        let block = c.next / BLOCK as u64;
        let block_start = block * BLOCK as u64;
        let block_len = (c.size - block_start).min(BLOCK as u64);
        let mut buf = vec![0u8; usize::try_from(block_len).unwrap_or(BLOCK)];
        match file.read_exact(&mut buf).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(c.verdicts.corrupt(&c.key).await)
            }
            Err(e) => return Err(Error::io("reading a range", e)),
        }
        let want = usize::try_from(block).ok().and_then(|i| c.blocks.get(i));
        if !block_matches(want, &buf) {
            return Err(c.verdicts.corrupt(&c.key).await);
        }
        let from = c.next - block_start;
        let to = (from + self.remaining).min(block_len);
        let out = Bytes::from(buf)
            .slice(usize::try_from(from).unwrap_or(0)..usize::try_from(to).unwrap_or(BLOCK));
        c.next += to - from;
        self.remaining -= to - from;
        Ok(out)
    }

    /// The next chunk of the range; `Ok(None)` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if let Some(range) = self.memory.take() {
            self.remaining = 0;
            return Ok(Some(range));
        }
        if self.checked.is_some() {
            return self.checked_chunk().await.map(Some);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        let want = usize::try_from(self.remaining).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = BytesMut::with_capacity(want);
        let n = file
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::io("reading a range", e))?;
        if n == 0 {
            return Err(Error::io(
                "reading a range",
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        self.remaining -= n as u64;
        Ok(Some(buf.freeze()))
    }

    /// Reads the whole range into memory.
    pub async fn bytes(mut self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// The range as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            match reader.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), reader)),
                Ok(None) => None,
                Err(e) => {
                    reader.remaining = 0;
                    Some((Err(e), reader))
                }
            }
        })
    }
}
