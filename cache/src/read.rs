//! Reading bodies back: whole, streaming, or a byte range.
//!
//! Every read is checked against the body's hash: the fast `xxh3-128`
//! checksum recorded when the body was written ([`Meta::check`]), or, for
//! entries stored before it existed, the SHA-256 content address. SHA-256 is
//! kept as the address (content is shared between keys by it), but checking
//! it on every read cost most of a hit's CPU even with the SHA extensions
//! (about 2 GB/s per core); xxh3 runs at memory speed.
//!
//! - [`Body::Full`]: small bodies, read and verified on a blocking thread
//!   before the hit is reported.
//! - [`BodyReader`]: a blocking thread reads 256 KiB pieces with plain file
//!   I/O, hashes each and hands it over through a bounded channel, so disk
//!   reads and hashing run beside the socket writes and memory stays flat
//!   (at most [`READ_AHEAD`] pieces per stream). The last piece is held
//!   back until the hash has been checked: on mismatch the entry is dropped
//!   and the final [`BodyReader::chunk`] returns [`Error::Corrupt`] instead
//!   of that piece, so the proxy aborts the response short of its length
//!   (the client sees a broken transfer, never a complete wrong file) and
//!   the next request refetches.
//! - [`RangeReader`]: seeks in the content file and reads only the range. A
//!   range of a content-addressed file cannot be checked against the whole
//!   file's hash, so the first ranged read of an integrity in a process
//!   hashes the whole file once (streaming); later ranges of it, and ranges
//!   of bodies this process wrote or fully read, seek straight away.
//!
//! [`Meta::check`]: crate::Meta::check

use std::io::{Read, SeekFrom};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::store::{Entry, Store};

/// Read size of ranges from disk; large enough that per-read overhead (a
/// syscall, a hyper frame) is amortised.
const CHUNK: usize = 1024 * 1024;
/// Read size of streamed bodies: small enough that the first bytes leave
/// while the rest is still being read and hashed (a 1 MiB body goes out in
/// four pieces, its reading and sending overlapped), large enough that the
/// hand-over per piece is amortised.
const PIECE: usize = 256 * 1024;
/// Pieces a streaming reader may read ahead of the client (4 MiB).
const READ_AHEAD: usize = 16;
/// Prefix of [`crate::Meta::check`] values.
const XXH3_PREFIX: &str = "xxh3-128:";

/// The `check` value for a body whose xxh3-128 digest is `digest`.
pub(crate) fn xxh3_check(digest: u128) -> String {
    format!("{XXH3_PREFIX}{digest:032x}")
}

/// Checks bytes against an entry's hash as they are read.
enum Verifier {
    Xxh3 { hasher: Box<Xxh3>, want: u128 },
    Sri(ssri::IntegrityChecker),
}

impl Verifier {
    fn for_entry(entry: &Entry) -> Verifier {
        Verifier::new(entry.meta.check.as_deref(), &entry.integrity)
    }

    fn new(check: Option<&str>, integrity: &cacache::Integrity) -> Verifier {
        let want = check
            .and_then(|c| c.strip_prefix(XXH3_PREFIX))
            .and_then(|hex| u128::from_str_radix(hex, 16).ok());
        match want {
            Some(want) => Verifier::Xxh3 {
                hasher: Box::default(),
                want,
            },
            None => Verifier::Sri(ssri::IntegrityChecker::new(integrity.clone())),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Verifier::Xxh3 { hasher, .. } => hasher.update(data),
            Verifier::Sri(checker) => checker.input(data),
        }
    }

    fn matches(self) -> bool {
        match self {
            Verifier::Xxh3 { hasher, want } => hasher.digest128() == want,
            Verifier::Sri(checker) => checker.result().is_ok(),
        }
    }
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

fn joined<T>(r: std::result::Result<T, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| Error::io("reading a body", std::io::Error::other(e)))
}

/// Reads and verifies a whole body (for small ones).
pub(crate) async fn read_whole(store: &Store, entry: &Entry) -> Result<Bytes> {
    let path = store.content_path(&entry.integrity);
    let mut verifier = Verifier::for_entry(entry);
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
            store.mark_verified(&entry.integrity, true);
            Ok(Bytes::from(data))
        }
        Ok((_, false)) => Err(store.drop_corrupt(&entry.key).await),
        Err(e) if not_found(&e) => Err(store.drop_corrupt(&entry.key).await),
        Err(e) => Err(Error::io("reading a body", e)),
    }
}

/// A body as it arrives from the blocking reader.
enum Piece {
    Data(Bytes),
    /// End of file: whether the body matched its size and hash.
    End(bool),
    Failed(std::io::Error),
}

/// Reads `file` in pieces, hashing each, until EOF or the receiver is gone.
///
/// Each piece is handed over only once the next one was read, and the last
/// one only with the verdict: a body that fails its check never reaches the
/// client whole, so the client's transfer breaks (short of its
/// `Content-Length`) instead of completing with wrong bytes.
fn produce(mut file: std::fs::File, mut verifier: Verifier, size: u64, tx: mpsc::Sender<Piece>) {
    let mut total = 0u64;
    let mut held: Option<Bytes> = None;
    loop {
        let mut buf = Vec::with_capacity(PIECE);
        match (&mut file).take(PIECE as u64).read_to_end(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                verifier.update(&buf);
                if let Some(previous) = held.replace(Bytes::from(buf)) {
                    if tx.blocking_send(Piece::Data(previous)).is_err() {
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
    let matched = total == size && verifier.matches();
    if matched {
        if let Some(last) = held {
            if tx.blocking_send(Piece::Data(last)).is_err() {
                return;
            }
        }
    }
    let _ = tx.blocking_send(Piece::End(matched));
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
    store: Store,
    key: CacheKey,
    integrity: cacache::Integrity,
    /// The first piece, read before the reader was handed out.
    first: Option<Piece>,
    rx: Option<mpsc::Receiver<Piece>>,
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
    pub(crate) async fn open(store: Store, entry: &Entry) -> Result<Self> {
        let path = store.content_path(&entry.integrity);
        let (tx, mut rx) = mpsc::channel(READ_AHEAD);
        let verifier = Verifier::for_entry(entry);
        let size = entry.size();
        // Dropped reader: the channel closes and the thread stops at its
        // next piece.
        drop(tokio::task::spawn_blocking(
            move || match std::fs::File::open(path) {
                Ok(file) => produce(file, verifier, size, tx),
                Err(e) => drop(tx.blocking_send(Piece::Failed(e))),
            },
        ));
        let first = match rx.recv().await {
            Some(Piece::Failed(e)) if not_found(&e) => {
                return Err(store.drop_corrupt(&entry.key).await)
            }
            Some(Piece::Failed(e)) => return Err(Error::io("opening a body", e)),
            // Failed its check before a byte was handed out.
            Some(Piece::End(false)) => return Err(store.drop_corrupt(&entry.key).await),
            first => first,
        };
        Ok(BodyReader {
            store,
            key: entry.key.clone(),
            integrity: entry.integrity.clone(),
            first,
            rx: Some(rx),
        })
    }

    /// The next chunk; `Ok(None)` once the whole body was read *and* matched
    /// its hash; [`Error::Corrupt`] if it did not.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(None);
        };
        let piece = match self.first.take() {
            Some(first) => Some(first),
            None => rx.recv().await,
        };
        if let Some(Piece::Data(data)) = piece {
            return Ok(Some(data));
        }
        self.rx = None;
        match piece {
            Some(Piece::End(true)) => {
                self.store.mark_verified(&self.integrity, true);
                Ok(None)
            }
            Some(Piece::End(false)) => Err(self.store.drop_corrupt(&self.key).await),
            Some(Piece::Failed(e)) => Err(Error::io("reading a body", e)),
            Some(Piece::Data(_)) | None => Err(Error::io(
                "reading a body",
                std::io::Error::other("the body reader stopped"),
            )),
        }
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
    file: tokio::fs::File,
    remaining: u64,
}

impl RangeReader {
    pub(crate) async fn open(store: Store, entry: &Entry, start: u64, end: u64) -> Result<Self> {
        let size = entry.size();
        if start > end || end >= size {
            return Err(Error::RangeNotSatisfiable { start, end, size });
        }
        if !store.is_verified(&entry.integrity) {
            let mut whole = BodyReader::open(store.clone(), entry).await?;
            while whole.chunk().await?.is_some() {}
        }
        let path = store.content_path(&entry.integrity);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(store.drop_corrupt(&entry.key).await)
            }
            Err(e) => return Err(Error::io("opening a body for a range", e)),
        };
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| Error::io("seeking in a body", e))?;
        Ok(RangeReader {
            file,
            remaining: end - start + 1,
        })
    }

    /// The next chunk of the range; `Ok(None)` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.remaining).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = BytesMut::with_capacity(want);
        let n = (&mut self.file)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(check: Option<&str>, stored: &[u8], read: &[&[u8]]) -> bool {
        let sri = ssri::Integrity::from(stored);
        let mut v = Verifier::new(check, &sri);
        for part in read {
            v.update(part);
        }
        v.matches()
    }

    #[test]
    fn the_recorded_checksum_verifies_reads_in_any_chunking() {
        let body = b"the body as it was written";
        let check = xxh3_check(xxhash_rust::xxh3::xxh3_128(body));
        assert!(verdict(Some(&check), body, &[&body[..5], &body[5..]]));
        assert!(!verdict(
            Some(&check),
            body,
            &[b"the body as it was WRITTEN"]
        ));
        assert!(!verdict(Some(&check), body, &[&body[..5]]));
    }

    #[test]
    fn entries_without_a_checksum_are_verified_against_sha256() {
        let body = b"stored before checksums existed";
        assert!(verdict(None, body, &[&body[..3], &body[3..]]));
        assert!(!verdict(None, body, &[b"stored before checksums EXISTED"]));
        // A malformed checksum falls back to the content address too.
        assert!(!verdict(Some("xxh3-128:zz"), body, &[b"tampered"]));
    }
}
