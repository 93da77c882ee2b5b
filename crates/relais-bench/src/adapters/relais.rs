//! relais over raw TCP, with `relais-protocol` and tokio: no client library,
//! so the generator's own overhead stays small and identical to what a lean
//! native client would do.
//!
//! Writes: one `DATA` frame per send, with any owed `PONG`s in the same
//! write (one system call). Reads: up to 64 KiB per system call, every whole
//! frame in it decoded in one go. `TCP_NODELAY` is set, as the server does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use relais_protocol::frames::{encode_data, kind};
use relais_protocol::{ClientFrame, FrameDecoder, Hello, ServerFrame, MAX_FRAME_LEN, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{Adapter, Publisher, Subscriber};

/// How much one read asks the socket for.
const READ_CHUNK: usize = 64 * 1024;

/// Connects clients to a relais server at a TCP address.
#[derive(Debug, Clone)]
pub struct RelaisAdapter {
    addr: String,
}

impl RelaisAdapter {
    /// An adapter for the server at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

/// The sending half: the socket's write half.
#[derive(Debug)]
pub struct RelaisPub {
    write: OwnedWriteHalf,
    buf: BytesMut,
    /// `PING`s the reader has seen and not yet answered.
    owed_pongs: Arc<AtomicU32>,
}

/// The receiving half: the socket's read half and the frame decoder.
#[derive(Debug)]
pub struct RelaisSub {
    read: OwnedReadHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
    owed_pongs: Arc<AtomicU32>,
    ended: bool,
}

impl Adapter for RelaisAdapter {
    type Pub = RelaisPub;
    type Sub = RelaisSub;

    async fn connect(&self, index: usize, room: &str) -> anyhow::Result<(RelaisPub, RelaisSub)> {
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to relais at {}", self.addr))?;
        stream.set_nodelay(true)?;
        let hello = ClientFrame::Hello(Hello {
            version: VERSION,
            name: format!("c{index}"),
            room: room.to_owned(),
            echo: true,
            token: None,
            resume: None,
        });
        stream.write_all(&hello.to_bytes()).await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
        loop {
            if let Some(body) = decoder.decode(&mut buf)? {
                match ServerFrame::decode(body)? {
                    ServerFrame::Welcome(_) => break,
                    ServerFrame::Refused(reason, text) => {
                        bail!("relais refused client {index}: {reason} {text}")
                    }
                    other => bail!("unexpected frame before WELCOME: {other:?}"),
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("relais closed the connection during the handshake");
            }
        }
        let (read, write) = stream.into_split();
        let owed_pongs = Arc::new(AtomicU32::new(0));
        Ok((
            RelaisPub {
                write,
                buf: BytesMut::with_capacity(256),
                owed_pongs: owed_pongs.clone(),
            },
            // Frames after the WELCOME already in `buf` stay there.
            RelaisSub {
                read,
                buf,
                decoder,
                owed_pongs,
                ended: false,
            },
        ))
    }
}

impl Publisher for RelaisPub {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.buf.clear();
        // Clients must answer PING; the answer rides along with the next
        // send. The server pings only after 10 s of silence from a client,
        // which a sending client never reaches.
        for _ in 0..self.owed_pongs.swap(0, Ordering::Relaxed) {
            ClientFrame::Pong.encode(&mut self.buf);
        }
        encode_data(&payload, &mut self.buf);
        self.write.write_all(&self.buf).await?;
        Ok(())
    }
}

impl Subscriber for RelaisSub {
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> anyhow::Result<bool> {
        loop {
            while !self.ended {
                let Some(body) = self.decoder.decode(&mut self.buf)? else {
                    break;
                };
                match body[0] {
                    // Hot path: MESSAGE = type, sender (short string), payload.
                    kind::MESSAGE if body.len() >= 2 => {
                        let payload_at = 2 + usize::from(body[1]);
                        if body.len() >= payload_at {
                            out.push(body.slice(payload_at..));
                        }
                    }
                    kind::PING => {
                        self.owed_pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    kind::GOODBYE => self.ended = true,
                    // JOINED, LEFT: presence, not measured.
                    _ => {}
                }
            }
            if !out.is_empty() {
                return Ok(true);
            }
            if self.ended {
                return Ok(false);
            }
            self.buf.reserve(READ_CHUNK);
            // `read_buf` is cancel-safe, and nothing is pending in `out` here.
            if self.read.read_buf(&mut self.buf).await? == 0 {
                self.decoder.decode_eof(&self.buf)?;
                return Ok(false);
            }
        }
    }
}
