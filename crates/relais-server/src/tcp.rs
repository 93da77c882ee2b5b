//! The TCP transport: frames straight on the byte stream.

use std::io;

use bytes::{Bytes, BytesMut};
use relais_protocol::{FrameDecoder, MAX_HELLO_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::session::{FrameSink, FrameSource, ReadError};

/// Splits a connected socket into the session's frame source and sink.
pub fn split(stream: TcpStream) -> (TcpFrameSource, TcpFrameSink) {
    // Relayed updates are small and latency-bound: never wait to coalesce.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    (
        TcpFrameSource {
            read,
            buf: BytesMut::with_capacity(512),
            decoder: FrameDecoder::new(MAX_HELLO_LEN),
        },
        TcpFrameSink {
            write,
            buf: BytesMut::new(),
        },
    )
}

/// Frames read from a TCP stream.
#[derive(Debug)]
pub struct TcpFrameSource {
    read: OwnedReadHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameSource for TcpFrameSource {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(body) = self.decoder.decode(&mut self.buf)? {
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

/// Frames written to a TCP stream.
#[derive(Debug)]
pub struct TcpFrameSink {
    write: OwnedWriteHalf,
    /// Reused between batches: a batch is copied into it and written with one
    /// `write_all`, which is one system call unless the socket buffer fills.
    buf: BytesMut,
}

impl FrameSink for TcpFrameSink {
    async fn send_batch(&mut self, frames: &[Bytes]) -> io::Result<()> {
        if let [one] = frames {
            return self.write.write_all(one).await;
        }
        self.buf.clear();
        for f in frames {
            self.buf.extend_from_slice(f);
        }
        self.write.write_all(&self.buf).await?;
        // Don't keep a huge buffer around after a burst.
        if self.buf.capacity() > 256 * 1024 {
            self.buf = BytesMut::new();
        }
        Ok(())
    }

    async fn close(&mut self) -> io::Result<()> {
        self.write.shutdown().await
    }
}
