//! relais over raw TCP, with `relais-protocol` and tokio: the handshake is
//! the client core's (`relais-client-core`), the hot path is not a client
//! library, so the generator's own overhead stays small and identical to
//! what a lean native client would do.
//!
//! Writes: one `DATA` frame per send, with any owed `PONG`s in the same
//! write (one system call). Reads: up to 64 KiB per system call, every whole
//! frame in it decoded in one go. `TCP_NODELAY` is set, as the server does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use relais_client_core::{Action, Core, Event, Options, Update};
use relais_protocol::frames::{encode_data, kind};
use relais_protocol::{ClientFrame, FrameDecoder, MAX_FRAME_LEN};
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
    /// Payloads that came in the handshake's reads, after the `WELCOME`.
    early: Vec<Bytes>,
}

impl Adapter for RelaisAdapter {
    type Pub = RelaisPub;
    type Sub = RelaisSub;

    async fn connect(&self, index: usize, room: &str) -> anyhow::Result<(RelaisPub, RelaisSub)> {
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to relais at {}", self.addr))?;
        stream.set_nodelay(true)?;
        let early = handshake(&mut stream, index, room).await?;
        let (read, write) = stream.into_split();
        let owed_pongs = Arc::new(AtomicU32::new(0));
        Ok((
            RelaisPub {
                write,
                buf: BytesMut::with_capacity(256),
                owed_pongs: owed_pongs.clone(),
            },
            RelaisSub {
                read,
                buf: BytesMut::with_capacity(READ_CHUNK),
                decoder: FrameDecoder::new(MAX_FRAME_LEN),
                owed_pongs,
                ended: false,
                early,
            },
        ))
    }
}

/// Joins as `c{index}` with the client core (no keepalive, no reconnect:
/// the generator answers pings itself, and a lost client is a failed run).
/// Returns the payloads that arrived with the `WELCOME`.
async fn handshake(stream: &mut TcpStream, index: usize, room: &str) -> anyhow::Result<Vec<Bytes>> {
    let mut options = Options::new(&format!("c{index}"));
    options.room = room.to_owned();
    options.keepalive = Duration::ZERO;
    options.reconnect_window = Duration::ZERO;
    let mut core = Core::new(options, Instant::now())?;
    core.handle_timeout(Instant::now());
    let Some(Action::Connect { .. }) = core.poll_action() else {
        bail!("the client core asked for no connection");
    };
    core.connected(Instant::now());
    let mut out = BytesMut::new();
    core.poll_transmit(&mut out);
    stream.write_all(&out).await?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut early = Vec::new();
    let mut joined = false;
    loop {
        while let Some(update) = core.poll_event() {
            match update {
                Update::Joined { .. } => joined = true,
                Update::Event(Event::Message(m)) => early.push(m.payload),
                Update::Failed(e) => bail!("relais refused client {index}: {e}"),
                _ => {}
            }
        }
        if joined {
            return Ok(early);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            core.handle_eof(Instant::now());
        } else {
            core.handle_input(&buf[..n], Instant::now());
        }
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
        out.append(&mut self.early);
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
