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
use relais_client_core::{Action, Core, Options, Update};
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
}

impl Adapter for RelaisAdapter {
    type Pub = RelaisPub;
    type Sub = RelaisSub;

    async fn connect(&self, index: usize, room: &str) -> anyhow::Result<(RelaisPub, RelaisSub)> {
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to relais at {}", self.addr))?;
        stream.set_nodelay(true)?;
        let buf = handshake(&mut stream, index, room).await?;
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
                buf,
                decoder: FrameDecoder::new(MAX_FRAME_LEN),
                owed_pongs,
                ended: false,
            },
        ))
    }
}

/// Joins as `c{index}` with the client core (no keepalive, no reconnect:
/// the generator answers pings itself, and a lost client is a failed run).
/// The core is fed one whole frame at a time up to the `WELCOME`, so what
/// follows it, whole or cut short, stays in the returned buffer for the
/// subscriber's own decoder.
async fn handshake(stream: &mut TcpStream, index: usize, room: &str) -> anyhow::Result<BytesMut> {
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
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    loop {
        while let Some(update) = core.poll_event() {
            match update {
                Update::Joined { .. } => return Ok(buf),
                Update::Failed(e) => bail!("relais refused client {index}: {e}"),
                _ => {}
            }
        }
        if let Some(body) = decoder.decode(&mut buf)? {
            let len = u32::try_from(body.len())?;
            core.handle_input(&len.to_be_bytes(), Instant::now());
            core.handle_input(&body, Instant::now());
        } else if stream.read_buf(&mut buf).await? == 0 {
            bail!("relais closed the connection during the handshake");
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

#[cfg(test)]
mod tests {
    use relais_protocol::frames::encode_message;
    use relais_protocol::{Resume, ServerFrame, Welcome, VERSION};
    use tokio::net::TcpListener;

    use super::*;

    /// A message cut in two, its first half in the `WELCOME`'s write, reaches
    /// the subscriber whole.
    #[tokio::test]
    async fn a_frame_cut_after_the_welcome_is_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (handshaken, rest_due) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
            while decoder.decode(&mut buf).unwrap().is_none() {
                assert_ne!(socket.read_buf(&mut buf).await.unwrap(), 0, "no HELLO");
            }
            let welcome = ServerFrame::Welcome(Welcome {
                version: VERSION,
                max_payload: 1024,
                room: "r".into(),
                members: vec!["c0".into()],
                resume: Some(Resume {
                    resumed: false,
                    token: "t".into(),
                }),
            });
            let message = encode_message("a", b"hello");
            let (head, tail) = message.split_at(message.len() / 2);
            let mut first = BytesMut::from(&welcome.to_bytes()[..]);
            first.extend_from_slice(head);
            socket.write_all(&first).await.unwrap();
            rest_due.await.unwrap();
            socket.write_all(tail).await.unwrap();
            socket
        });
        let adapter = RelaisAdapter::new(addr.to_string());
        let (_publisher, mut subscriber) = adapter.connect(0, "r").await.unwrap();
        handshaken.send(()).unwrap();
        let mut out = Vec::new();
        assert!(subscriber.recv_batch(&mut out).await.unwrap());
        assert_eq!(out, vec![Bytes::from_static(b"hello")]);
        drop(server.await.unwrap());
    }
}
