//! Plain-TCP client connections that send cached bodies with `sendfile(2)`.
//!
//! A large hit streams from memory maps of its content file: each block is
//! checked where the page cache holds it and handed to hyper as a slice of
//! the mapping (`cistern_cache` `map.rs`). Written to a socket with `write`,
//! those bytes are copied once more, from the mapping into the socket's
//! buffers, and that copy was most of cistern's CPU on a hit. On a plain
//! connection this stream asks the cache, for each buffer hyper writes,
//! whether it is such a slice ([`cistern_cache::mapped_source`]), and if so
//! has the kernel send the same bytes from the content file's page cache:
//! the pages the check has just read, which nothing changes in place (see
//! `map.rs`). All other bytes (response heads, bodies from memory or from
//! the origin) are written as before.
//!
//! TLS connections cannot do this (the bytes are encrypted in user space)
//! and keep writing from the mapping.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A client's TCP connection; see the module docs.
#[derive(Debug)]
pub struct PlainStream {
    stream: TcpStream,
    /// `sendfile` failed as unsupported once: write from the mapping.
    no_sendfile: bool,
}

impl PlainStream {
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream) -> Self {
        PlainStream {
            stream,
            no_sendfile: false,
        }
    }

    /// Sends up to `len` bytes of `file` from `offset` once the socket can
    /// take them. `None`: this kernel or file cannot be sent from; write
    /// the bytes instead.
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Poll<Option<io::Result<usize>>> {
        let Ok(mut offset) = i64::try_from(offset) else {
            return Poll::Ready(None);
        };
        loop {
            if let Err(e) = ready!(self.stream.poll_write_ready(cx)) {
                return Poll::Ready(Some(Err(e)));
            }
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile(self.stream.as_fd(), file, Some(&mut offset), len)
                    .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                        nix::errno::Errno::EINVAL
                            | nix::errno::Errno::ENOSYS
                            | nix::errno::Errno::EOPNOTSUPP
                    ) =>
                {
                    self.no_sendfile = true;
                    return Poll::Ready(None);
                }
                // 0 sent: the file ended before `offset + len`, so it was
                // cut short since its check; hyper takes `Ok(0)` for a
                // broken connection, which is the truth for this response.
                sent => return Poll::Ready(Some(sent)),
            }
        }
    }

    /// Sends `buf` from its content file when it is a checked slice of a
    /// mapped body.
    fn poll_write_mapped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Option<io::Result<usize>>> {
        if self.no_sendfile {
            return Poll::Ready(None);
        }
        match cistern_cache::mapped_source(buf) {
            Some((file, offset)) => self.poll_send_file(cx, &file, offset, buf.len()),
            None => Poll::Ready(None),
        }
    }
}

impl AsyncRead for PlainStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(sent) = ready!(self.poll_write_mapped(cx, buf)) {
            return Poll::Ready(sent);
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    /// hyper queues a response's head and body chunks and writes them
    /// vectored: a mapped slice first in line goes by `sendfile`, the
    /// buffers before the first mapped one by `writev`.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.first() {
            if let Some(sent) = ready!(self.poll_write_mapped(cx, first)) {
                return Poll::Ready(sent);
            }
        }
        let plain = if self.no_sendfile {
            bufs.len()
        } else {
            bufs.iter()
                .skip(1)
                .position(|b| cistern_cache::mapped_source(b).is_some())
                .map_or(bufs.len(), |i| i + 1)
        };
        Pin::new(&mut self.stream).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
