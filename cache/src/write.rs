//! Streaming writes of origin bodies into the store.
//!
//! The proxy tees the origin body: each chunk goes to the client and to
//! [`Writer::write_bytes`]. Only [`Writer::commit`] makes the entry visible,
//! after checking the length against `Content-Length` (when the origin sent
//! one), hashing the stored bytes and moving them into place. A writer
//! dropped without commit — origin error, stall, cut-short body — is aborted:
//! its temp file is deleted and the index never hears of it.
//!
//! How the work is split, so that a miss streams to its client at origin
//! speed:
//! - while the body arrives, a blocking thread per write appends the chunks
//!   (handed over in batches of about 256 KiB, without copying) to a temp file
//!   in `tmp/`. Chunks reach it through a queue bounded in bytes
//!   (`QUEUE_BYTES`): a disk slower than the network holds the client back
//!   only once that much is queued, and memory stays bounded. Nothing is
//!   hashed here: on a fast network the miss is bound by CPU (each byte is
//!   received, sent and written), and every pass over the bytes slows the
//!   client;
//! - at commit the same thread reads the file back (from the page cache) and
//!   computes both the SHA-256 content address and the fast `xxh3-128`
//!   checksums that reads are verified with (see `check.rs`). SHA-256 costs
//!   about as much CPU as the rest of the miss together; done after the
//!   body, it delays only the commit (single-flight followers wait for it),
//!   not the client's transfer. The file is then renamed into cacache's
//!   `content-v2` layout, exactly as cacache's own writer does.
//!
//! Any I/O error (including a full disk, [`Error::DiskFull`]) aborts the
//! write on the spot; later calls return it or [`Error::WriteAborted`]. The
//! proxy keeps streaming to the client from origin and logs; reads are
//! unaffected.
//!
//! This is the store's miss handler: it knows nothing of the store. It
//! writes into the directory its `Target` names, and hands the body it
//! put in place to the target's `Admission` (the store's index).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cacache::Integrity;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use twox_hash::XxHash3_128 as Xxh3;

use crate::check::{xxh3_check, BlockChecks, BLOCK};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::layout::content_path;
use crate::meta::Meta;
use crate::storage::{Admission, Committed};
use crate::tail::{End, Progress, Tail};

/// Bytes of body that may wait for the disk per write. Small on purpose:
/// the bytes are received, sent and written while they are still in the
/// CPU's cache; with 8 MiB queued, `scripts/bench-cache` measured misses
/// about 20% slower.
const QUEUE_BYTES: usize = 2 * 1024 * 1024;
/// Chunks are handed to the thread in batches of about this many bytes, so
/// it is woken once per batch rather than once per network read.
const BATCH_BYTES: usize = 256 * 1024;
/// Read size when hashing the finished file (a multiple of the block size).
const HASH_CHUNK: usize = 4 * BLOCK;

/// Where a write goes, and what it tells the store.
pub(crate) struct Target {
    /// The cache directory: the body is written under `tmp/`, then moved
    /// to its content path.
    pub(crate) dir: PathBuf,
    /// Bodies larger than this are given up (`StoreConfig::max_object`).
    pub(crate) max_object: Option<u64>,
    /// How long followers wait for progress before they go on without the
    /// download (the store's lock timeout).
    pub(crate) stall: Duration,
    /// Followers map the temp file (`StoreConfig::map_reads`).
    pub(crate) map_reads: bool,
    /// Indexes the body once it is in place.
    pub(crate) admission: Arc<dyn Admission>,
}

/// What the proxy sends to the writing thread.
enum Msg {
    Data(Vec<Bytes>, OwnedSemaphorePermit),
    /// The body ended cleanly: hash, move into place, answer.
    End(Option<Integrity>, oneshot::Sender<std::io::Result<Stored>>),
    /// The source of the body failed: followers go on from elsewhere.
    SourceFailed,
}

/// A body on disk under its content address.
struct Stored {
    integrity: Integrity,
    check: u128,
    blocks: String,
}

/// An open body write. See the module docs.
pub struct Writer {
    admission: Arc<dyn Admission>,
    max_object: Option<u64>,
    key: CacheKey,
    meta: Meta,
    expected: Option<u64>,
    written: u64,
    budget: Arc<Semaphore>,
    /// Chunks not yet handed to the thread, and their size.
    batch: Vec<Bytes>,
    batched: usize,
    /// The temp file, removed on abort right away (the thread may still
    /// hold it open for a moment).
    tmp_path: PathBuf,
    tx: Option<mpsc::UnboundedSender<Msg>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// The body as it is written, for requests that follow this download
    /// (see `tail.rs`).
    tail: Tail,
    /// The content address the body must hash to (a fill from the shared
    /// tier); a body that does not is never put in place.
    address: Option<Integrity>,
    /// Told of the commit (the shared tier's uploads).
    hook: Option<Arc<dyn Committed>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("key", &self.key)
            .field("written", &self.written)
            .field("expected", &self.expected)
            .field("open", &self.tx.is_some())
            .finish()
    }
}

impl Writer {
    pub(crate) async fn open(
        target: Target,
        key: CacheKey,
        meta: Meta,
        expected: Option<u64>,
    ) -> Result<Self> {
        let dir = target.dir.clone();
        let (file, reader) = tokio::task::spawn_blocking(move || {
            let tmp = dir.join("tmp");
            std::fs::create_dir_all(&tmp)?;
            let file = tempfile::NamedTempFile::new_in(tmp)?;
            // Its own descriptor: followers read at offsets, while the
            // thread appends and later seeks through the file to hash it.
            let reader = std::fs::File::open(file.path())?;
            Ok::<_, std::io::Error>((file, reader))
        })
        .await
        .map_err(|e| Error::io("starting a body write", std::io::Error::other(e)))?
        .map_err(|e| Error::io("starting a body write", e))?;
        let tmp_path = file.path().to_path_buf();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let tail = Tail::new(
            meta.clone(),
            reader,
            progress,
            key.to_string(),
            target.stall,
            target.map_reads,
        );
        // Unbounded in messages, bounded in bytes by `budget`.
        let (tx, rx) = mpsc::unbounded_channel();
        let dir = target.dir;
        let thread = tokio::task::spawn_blocking(move || run(file, rx, dir, &progress_tx));
        Ok(Writer {
            admission: target.admission,
            max_object: target.max_object,
            key,
            meta,
            expected,
            written: 0,
            budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
            batch: Vec::new(),
            batched: 0,
            tmp_path,
            tx: Some(tx),
            thread: Some(thread),
            tail,
            address: None,
            hook: None,
        })
    }

    /// The body as it is being written, for requests that follow this
    /// download instead of fetching it again.
    pub fn tail(&self) -> Tail {
        self.tail.clone()
    }

    /// Commits only a body that hashes to `integrity`: one fetched by its
    /// content address (from the shared tier). Any other is dropped at
    /// commit with [`Error::AddressMismatch`].
    pub(crate) fn expect_address(&mut self, integrity: Integrity) {
        self.address = Some(integrity);
    }

    /// Requests reading along with this write ([`Writer::tail`]) check
    /// each block against `blocks` before they hand it out (a fill from
    /// the shared tier, whose blocks the storing runner recorded).
    pub(crate) fn expect_blocks(&mut self, size: u64, blocks: Vec<u64>) {
        self.tail.expect_blocks(size, blocks);
    }

    /// Gives the write up because its *source* failed (the shared tier
    /// went away mid-body, or sent a body that does not match): unlike a
    /// dropped write, requests reading along go on from the origin after
    /// what they have read, as after a failed disk write.
    pub(crate) fn source_failed(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::SourceFailed);
            let _ = std::fs::remove_file(&self.tmp_path);
            self.count_abort();
        }
        self.thread = None;
    }

    /// Tells `hook` of the commit.
    pub(crate) fn on_commit(&mut self, hook: Arc<dyn Committed>) {
        self.hook = Some(hook);
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk of the body (copying it). On error the write is
    /// aborted.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.write_bytes(Bytes::copy_from_slice(chunk)).await
    }

    /// Appends a chunk of the body without copying it. Waits only when
    /// `QUEUE_BYTES` are already waiting for the disk. On error the write
    /// is aborted.
    pub async fn write_bytes(&mut self, chunk: Bytes) -> Result<()> {
        if self.tx.is_none() {
            return Err(self.failure().await);
        }
        if let Some(limit) = self.max_object {
            if self.written + chunk.len() as u64 > limit {
                self.abort();
                return Err(Error::TooLarge { limit });
            }
        }
        self.written += chunk.len() as u64;
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands the batch to the thread, once the queue has room for it.
    async fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let permits = u32::try_from(self.batched.min(QUEUE_BYTES)).unwrap_or(u32::MAX);
        let Ok(permit) = self.budget.clone().acquire_many_owned(permits).await else {
            return Err(self.failure().await);
        };
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Data(batch, permit)).is_ok());
        if !sent {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// Makes the entry visible, replacing any previous entry for the key.
    pub async fn commit(mut self) -> Result<Entry> {
        if let Some(expected) = self.expected {
            if expected != self.written {
                self.abort();
                return Err(Error::LengthMismatch {
                    expected,
                    actual: self.written,
                });
            }
        }
        self.flush().await?;
        let (answer, stored) = oneshot::channel();
        let sent = self
            .tx
            .take()
            .is_some_and(|tx| tx.send(Msg::End(self.address.clone(), answer)).is_ok());
        if !sent {
            return Err(self.failure().await);
        }
        let stored = match stored.await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                self.count_abort();
                if let Some(expected) = self.address.as_ref().filter(|_| is_mismatch(&e)) {
                    return Err(Error::AddressMismatch {
                        expected: expected.to_string(),
                    });
                }
                return Err(Error::io("committing a body", e));
            }
            Err(_) => return Err(self.failure().await),
        };
        self.thread = None;
        let integrity = stored.integrity;
        let mut meta = self.meta.clone();
        meta.size = self.written;
        meta.integrity = integrity.to_string();
        meta.check = Some(xxh3_check(stored.check));
        meta.blocks = Some(stored.blocks);
        if let Err(e) = self.admission.admit(&self.key, &integrity, &meta).await {
            self.count_abort();
            return Err(e);
        }
        let entry = Entry {
            key: self.key.clone(),
            meta,
            integrity,
        };
        if let Some(hook) = &self.hook {
            hook.committed(&entry);
        }
        Ok(entry)
    }

    /// The error that stopped the writing thread (the write is aborted).
    async fn failure(&mut self) -> Error {
        self.tx = None;
        let thread = self.thread.take();
        let aborted = || Error::WriteAborted {
            key: self.key.to_string(),
        };
        let Some(thread) = thread else {
            return aborted();
        };
        self.count_abort();
        match thread.await {
            Ok(Err(e)) => Error::io("writing a body", e),
            Ok(Ok(())) => aborted(),
            Err(e) => Error::io("writing a body", std::io::Error::other(e)),
        }
    }

    fn abort(&mut self) {
        // Closing the queue without `End` stops the thread.
        if self.tx.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
            self.count_abort();
        }
        self.thread = None;
    }

    fn count_abort(&self) {
        self.admission.aborted();
        tracing::debug!(key = %self.key, written = self.written, "cache write aborted");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The writing thread: appends chunks until `End` (then hashes and moves the
/// file into place) or until the queue closes (abort: the temp file is
/// deleted on return). A write error ends it early with that error.
/// Followers learn of each batch on disk and of the end through `progress`
/// (a thread that returns early drops it, which they take for a failure).
fn run(
    mut file: tempfile::NamedTempFile,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    dir: PathBuf,
    progress: &watch::Sender<Progress>,
) -> std::io::Result<()> {
    let mut size = 0u64;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunks, _permit) => {
                for chunk in chunks {
                    if let Err(e) = file.as_file_mut().write_all(&chunk) {
                        progress.send_modify(|p| p.end = End::WriteFailed);
                        return Err(e);
                    }
                    size += chunk.len() as u64;
                }
                progress.send_modify(|p| p.written = size);
            }
            Msg::SourceFailed => {
                progress.send_modify(|p| p.end = End::WriteFailed);
                return Ok(());
            }
            Msg::End(address, answer) => {
                let stored = persist(file, size, &dir, address.as_ref());
                let end = match &stored {
                    Ok(stored) => End::Stored(stored.check),
                    Err(_) => End::WriteFailed,
                };
                progress.send_modify(|p| p.end = end);
                let _ = answer.send(stored);
                return Ok(());
            }
        }
    }
    progress.send_modify(|p| p.end = End::Failed);
    Ok(())
}

/// The message of the error `persist` returns for a body that does not
/// hash to its expected content address.
const MISMATCH: &str = "the body does not hash to its content address";

fn is_mismatch(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData && e.to_string() == MISMATCH
}

/// Hashes the finished file, checks its length against what was received,
/// and renames it to its content path (an existing file there has the same
/// content: identical bodies are stored once).
fn persist(
    mut file: tempfile::NamedTempFile,
    size: u64,
    dir: &Path,
    address: Option<&Integrity>,
) -> std::io::Result<Stored> {
    file.as_file_mut().seek(SeekFrom::Start(0))?;
    let mut sha = ssri::IntegrityOpts::new().algorithm(ssri::Algorithm::Sha256);
    let mut check = Box::<Xxh3>::default();
    let mut blocks = BlockChecks::default();
    let mut read = 0u64;
    let mut buf = Vec::with_capacity(HASH_CHUNK);
    loop {
        buf.clear();
        // Whole reads of HASH_CHUNK (a multiple of the block size) keep the
        // blocks aligned.
        let n = (&mut *file.as_file_mut())
            .take(HASH_CHUNK as u64)
            .read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.input(&buf);
        check.write(&buf);
        blocks.add(&buf);
        read += n as u64;
    }
    if read != size {
        return Err(std::io::Error::other(
            "the body on disk differs in length from the body received",
        ));
    }
    let integrity = sha.result();
    if address.is_some_and(|expected| expected.matches(&integrity).is_none()) {
        // Dropped with `file`: never put in place.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            MISMATCH,
        ));
    }
    let path = content_path(dir, &integrity);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if let Err(e) = file.persist(&path) {
        if !path.exists() {
            return Err(e.error);
        }
    }
    Ok(Stored {
        integrity,
        check: check.finish_128(),
        blocks: blocks.finish(),
    })
}
