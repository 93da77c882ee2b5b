//! The TCP transport: frames straight on the byte stream. The source and
//! sink are generic over any async byte stream, so tests can run sessions
//! over in-memory pipes (`tokio::io::duplex`) with a paused clock.

use std::io;

use bytes::{Bytes, BytesMut};
use relais_protocol::{FrameDecoder, MAX_HELLO_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::session::{FrameSink, FrameSource, ReadError};
use crate::tcp_info::{self, SendQueue};
use crate::Config;

/// Socket options for an accepted client connection, whatever protocol it
/// then speaks.
pub fn tune(stream: &TcpStream, config: &Config) {
    // Relayed updates are small and latency-bound: never wait to coalesce.
    let _ = stream.set_nodelay(true);
    // Only if configured: pacing already bounds what waits in the kernel.
    if config.send_buffer_bytes > 0 {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(config.send_buffer_bytes);
    }
}

/// Frames read from a byte stream.
#[derive(Debug)]
pub struct StreamSource<R> {
    read: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R> StreamSource<R> {
    /// A source that accepts only a `HELLO`-sized frame until told otherwise.
    pub fn new(read: R) -> Self {
        Self {
            read,
            buf: BytesMut::with_capacity(512),
            decoder: FrameDecoder::new(MAX_HELLO_LEN),
        }
    }
}

impl<R: AsyncRead + Unpin + Send> FrameSource for StreamSource<R> {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(body) = self.decoder.decode(&mut self.buf)? {
                // After a large frame, don't keep its buffer around.
                if self.buf.is_empty() && self.buf.capacity() > 16 * 1024 {
                    self.buf = BytesMut::new();
                }
                return Ok(Some(body));
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(4096);
            }
            // `read_buf` is cancel-safe: bytes are either in `buf` or unread.
            if self.read.read_buf(&mut self.buf).await? == 0 {
                self.decoder.decode_eof(&self.buf)?;
                return Ok(None);
            }
        }
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.decoder.set_max_frame_len(max);
    }
}

/// Most bytes of small frames a sink copies together into one write. A
/// batch up to this size is copied and written at once; a larger one goes
/// out with `writev` straight from the shared frames on plain sockets, and
/// in pieces of at most this on streams without vectored writes (TLS; a
/// frame at least this large is written from its shared bytes, uncopied).
/// So a connection never holds a private copy of more than this, however
/// large its batch.
pub const COALESCE_BYTES: usize = 16 * 1024;

/// Most frames handed to one `writev` (Linux's `IOV_MAX`).
const MAX_IOV: usize = 1024;

/// Frames written to a byte stream.
#[derive(Debug)]
pub struct StreamSink<W> {
    write: W,
    /// Reused between batches: small frames are copied into it and written
    /// together, one system call per [`COALESCE_BYTES`].
    buf: BytesMut,
}

impl<W> StreamSink<W> {
    /// A sink writing to `write`.
    pub fn new(write: W) -> Self {
        Self {
            write,
            buf: BytesMut::new(),
        }
    }
}

/// Writes `frames` in order with as few `writev` calls as the socket takes,
/// straight from their (shared) bytes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Bytes]) -> io::Result<()> {
    let (mut i, mut offset) = (0, 0); // the next byte: frames[i][offset]
    let mut slices = Vec::with_capacity(frames.len().min(MAX_IOV));
    while i < frames.len() {
        slices.clear();
        slices.push(io::IoSlice::new(&frames[i][offset..]));
        let rest = frames[i + 1..].iter().take(MAX_IOV - 1);
        slices.extend(rest.map(|f| io::IoSlice::new(f)));
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = frames[i].len() - offset;
            if n >= left {
                n -= left;
                i += 1;
                offset = 0;
            } else {
                offset += n;
                n = 0;
            }
        }
        // Empty frames never occur (a frame has its length prefix), but
        // skipping them keeps the loop finite whatever it is given.
        while i < frames.len() && frames[i].len() == offset {
            i += 1;
            offset = 0;
        }
    }
    w.flush().await
}

/// A byte stream that may tell how much of what was written to it is still
/// queued (see [`crate::pacing`]).
pub trait SendQueueProbe {
    /// The stream's send queue, or `None` if it cannot tell.
    fn send_queue(&self) -> Option<SendQueue>;
}

impl SendQueueProbe for TcpStream {
    fn send_queue(&self) -> Option<SendQueue> {
        tcp_info::send_queue(self).ok()
    }
}

impl SendQueueProbe for OwnedWriteHalf {
    fn send_queue(&self) -> Option<SendQueue> {
        self.as_ref().send_queue()
    }
}

/// In-memory pipes (tests) are not paced.
impl<T> SendQueueProbe for tokio::io::WriteHalf<T> {
    fn send_queue(&self) -> Option<SendQueue> {
        None
    }
}

impl<W: AsyncWrite + Unpin + Send + SendQueueProbe> FrameSink for StreamSink<W> {
    async fn send_batch(&mut self, frames: &[Bytes]) -> io::Result<()> {
        if let [one] = frames {
            self.write.write_all(one).await?;
            return self.write.flush().await;
        }
        // A small batch is cheapest copied into one buffer and written
        // with one `write`; a large one goes out with `writev`, uncopied.
        let total: usize = frames.iter().map(Bytes::len).sum();
        if total > COALESCE_BYTES && self.write.is_write_vectored() {
            return write_all_vectored(&mut self.write, frames).await;
        }
        self.buf.clear();
        for f in frames {
            if self.buf.len() + f.len() > COALESCE_BYTES && !self.buf.is_empty() {
                self.write.write_all(&self.buf).await?;
                self.buf.clear();
            }
            if f.len() >= COALESCE_BYTES {
                self.write.write_all(f).await?;
            } else {
                self.buf.extend_from_slice(f);
            }
        }
        if !self.buf.is_empty() {
            self.write.write_all(&self.buf).await?;
        }
        // A no-op on a socket; TLS may hold encrypted records until flushed.
        self.write.flush().await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.write.shutdown().await
    }

    fn send_queue(&self) -> Option<SendQueue> {
        self.write.send_queue()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A vectored writer that takes at most `step` bytes a call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            assert!(bufs.len() <= MAX_IOV);
            let mut left = self.step;
            for b in bufs {
                let n = b.len().min(left);
                self.out.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_survive_partial_writes_in_order() {
        let frames: Vec<Bytes> = (0..3000u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1 + (i as usize * 7) % 40]))
            .collect();
        let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        for step in [1, 7, 64, 1 << 20] {
            let mut w = Trickle {
                out: Vec::new(),
                step,
                calls: 0,
            };
            write_all_vectored(&mut w, &frames).await.unwrap();
            assert_eq!(w.out, all, "step {step}");
            if step == 1 << 20 {
                // At most MAX_IOV frames a call.
                assert_eq!(w.calls, frames.len().div_ceil(MAX_IOV));
            }
        }
    }
}
