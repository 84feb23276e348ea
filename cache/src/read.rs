//! Reading bodies back: whole, streaming, or a byte range.
//!
//! - [`Body::Full`]: small bodies, read and verified before the hit is
//!   reported.
//! - [`BodyReader`]: streams through cacache's verifying reader in 256 KiB
//!   chunks; memory stays flat whatever the body size. The hash is checked
//!   when the last byte has been read: on mismatch the entry is dropped and
//!   the final [`BodyReader::chunk`] returns [`Error::Corrupt`] instead of
//!   end-of-body, so the proxy aborts the response (the client sees a broken
//!   transfer, never a complete wrong file) and the next request refetches.
//! - [`RangeReader`]: seeks in the content file and reads only the range. A
//!   range of a content-addressed file cannot be checked against the whole
//!   file's hash, so the first ranged read of an integrity in a process
//!   hashes the whole file once (streaming); later ranges of it, and ranges
//!   of bodies this process wrote or fully read, seek straight away.

use std::io::SeekFrom;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::store::{Entry, Store};

/// Read size for streaming; large enough that the per-read overhead of
/// tokio's blocking file I/O is amortised.
const CHUNK: usize = 256 * 1024;

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
    reader: Option<cacache::Reader>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("key", &self.key)
            .field("done", &self.reader.is_none())
            .finish()
    }
}

impl BodyReader {
    pub(crate) async fn open(store: Store, entry: &Entry) -> Result<Self> {
        match cacache::Reader::open_hash(store.dir(), entry.integrity.clone()).await {
            Ok(reader) => Ok(BodyReader {
                store,
                key: entry.key.clone(),
                integrity: entry.integrity.clone(),
                reader: Some(reader),
            }),
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(store.drop_corrupt(&entry.key).await)
            }
            Err(e) => Err(Error::cacache("opening a body", e)),
        }
    }

    /// The next chunk; `Ok(None)` once the whole body was read *and* matched
    /// its hash; [`Error::Corrupt`] if it did not.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = reader
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::io("reading a body", e))?;
        if n > 0 {
            return Ok(Some(buf.freeze()));
        }
        let Some(reader) = self.reader.take() else {
            return Ok(None);
        };
        match reader.check() {
            Ok(_) => {
                self.store.mark_verified(&self.integrity, true);
                Ok(None)
            }
            Err(_) => Err(self.store.drop_corrupt(&self.key).await),
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
