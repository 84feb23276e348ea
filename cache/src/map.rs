//! Content files mapped into memory, for streaming large hits without
//! copying them.
//!
//! A streamed hit read with `read(2)` touches every byte three times in
//! cistern: the kernel copies it from the page cache into a buffer, xxh3
//! checks the buffer, and the socket write copies it out again. Mapped,
//! the check reads the page cache directly and the socket write copies
//! from it, so the first copy is gone: about 40% less CPU per byte of a
//! 1 GB hit, measured back to back (0.42 against 0.6 to 0.7 CPU seconds
//! per GB; 0.38 with the check moved next to the socket write).
//!
//! This is the only `unsafe` code in the crate, and what it relies on:
//! - content files are written once under a temporary name and renamed into
//!   place, and leave only by `unlink`; neither changes the bytes of a
//!   mapping already made. Nothing in cistern writes to or truncates a
//!   content file that is in place. Requests reading along with a download
//!   map its temp file too, only the part already written: the writer only
//!   appends;
//! - the file's length is checked against the entry before mapping, so a
//!   short (damaged) file is a corrupt entry, never a mapping past its end;
//! - each window is populated with `MADV_POPULATE_READ` before it is read,
//!   which reports a page that cannot be read (I/O error, or a file cut
//!   short since) as an error instead of `SIGBUS`;
//! - the socket write that sends from the mapping runs in the kernel, where
//!   a page that went away is an `EFAULT` from `write`, not a signal. On a
//!   plain connection cistern does not even copy from the mapping: it asks
//!   [`mapped_source`] where a checked slice came from and `sendfile`s the
//!   same bytes from the content file's page cache (a file cut short since
//!   sends fewer bytes, which breaks that response).
//!
//! What remains: a content file truncated in place by someone else in the
//! few milliseconds between its window's population and its check would
//! stop the process with `SIGBUS`. Use `cistern cache purge`, never editing, on a
//! running cache; and turn mapping off (`caching.cache.map_reads: false`)
//! for a cache directory on a network filesystem, whose files other hosts
//! may change.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;

/// A window of a content file, mapped read-only and populated. While it
/// lives, its address range is in [`WINDOWS`].
struct Window(memmap2::Mmap);

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // Before the unmapping (the field drops after this), so that no
        // address is ever looked up as part of a window that is gone.
        if self.0.is_empty() {
            return;
        }
        let start = self.0.as_ptr() as usize;
        let mut windows = WINDOWS.write().unwrap_or_else(PoisonError::into_inner);
        windows.remove(&start);
        LIVE.store(windows.len(), Ordering::Relaxed);
    }
}

/// Where a mapped window comes from.
struct Source {
    end: usize,
    file: Arc<File>,
    offset: u64,
}

/// The populated windows alive now, by start address. Windows cannot
/// overlap: each is a mapping of its own until it is dropped.
static WINDOWS: RwLock<BTreeMap<usize, Source>> = RwLock::new(BTreeMap::new());
/// How many there are, so that writes of other bytes skip the lock.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The content file and offset that `bytes` were mapped from, when they
/// lie within one window of a body being streamed (slices of the
/// [`Bytes`] a [`BodyReader`](crate::BodyReader) hands out do, after their
/// check).
///
/// This lets a plain socket send them with `sendfile(2)` from the page
/// cache instead of copying them from the mapping: the same pages the check
/// read (see the module docs for why they cannot have changed), without
/// the copy. The caller must hold a reference to the bytes for as long as
/// it uses the answer, which keeps the window mapped and the file open.
pub fn mapped_source(bytes: &[u8]) -> Option<(Arc<File>, u64)> {
    if LIVE.load(Ordering::Relaxed) == 0 || bytes.is_empty() {
        return None;
    }
    let start = bytes.as_ptr() as usize;
    let windows = WINDOWS.read().unwrap_or_else(PoisonError::into_inner);
    let (&base, source) = windows.range(..=start).next_back()?;
    (start + bytes.len() <= source.end)
        .then(|| (source.file.clone(), source.offset + (start - base) as u64))
}

/// Maps `len` bytes of `file` from `offset` (a multiple of the page size)
/// without reading them yet, and asks the kernel to start reading them in
/// the background (`MADV_WILLNEED`).
pub(crate) fn map(file: &Arc<File>, offset: u64, len: usize) -> io::Result<Mapped> {
    // SAFETY: see the module docs: the caller checked `offset + len`
    // against the file's length, and content files are never changed in
    // place, so the mapping is not aliased by writes.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(&**file)?
    };
    // Advice only; a kernel that ignores it reads the pages on demand.
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(Mapped {
        map,
        file: file.clone(),
        offset,
    })
}

/// A mapped window, not yet populated.
pub(crate) struct Mapped {
    map: memmap2::Mmap,
    file: Arc<File>,
    offset: u64,
}

impl Mapped {
    /// Reads the window's pages in (or finds them in the page cache), so
    /// that touching them cannot fault, and hands the window out as
    /// [`Bytes`] that slices of it keep mapped. `ErrorKind::Unsupported`
    /// when the kernel cannot populate mappings (before Linux 5.14):
    /// callers read the file instead.
    pub(crate) fn populate(self) -> io::Result<Bytes> {
        if let Err(e) = self.map.advise(memmap2::Advice::PopulateRead) {
            return Err(match e.raw_os_error() {
                Some(code) if code == EINVAL => io::Error::from(io::ErrorKind::Unsupported),
                // A page past the end of the file: it was cut short.
                Some(code) if code == EFAULT => io::Error::from(io::ErrorKind::UnexpectedEof),
                _ => e,
            });
        }
        if self.map.is_empty() {
            return Ok(Bytes::new());
        }
        let start = self.map.as_ptr() as usize;
        let source = Source {
            end: start + self.map.len(),
            file: self.file,
            offset: self.offset,
        };
        let mut windows = WINDOWS.write().unwrap_or_else(PoisonError::into_inner);
        windows.insert(start, source);
        LIVE.store(windows.len(), Ordering::Relaxed);
        drop(windows);
        Ok(Bytes::from_owner(Window(self.map)))
    }
}

const EINVAL: i32 = 22;
const EFAULT: i32 = 14;
