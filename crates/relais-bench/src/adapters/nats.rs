//! NATS core pub/sub over the raw text protocol, with tokio: one connection
//! per client, which subscribes to the room's subject and publishes to it.
//! NATS echoes a connection's own messages to its subscriptions by default
//! (`"echo":true`), which is the workload's echo. No client library, so the
//! generator spends on a NATS client about what it spends on a relais one.
//!
//! Handshake: `CONNECT {...}`, `SUB <room> 1` and `PING` in one write, then
//! read until the server's `PONG`: the server handles a connection's
//! commands in order, so once the `PONG` is back the subscription is live.
//! `verbose` is off, so the server sends no `+OK`.
//!
//! Writes: one `PUB <room> <len>\r\n<payload>\r\n` per send, with any owed
//! `PONG`s in the same write (one system call). Reads: up to 64 KiB per
//! system call, every whole `MSG` in it parsed in place (the payload is a
//! slice of the read buffer, no copy). `TCP_NODELAY` is set.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{bail, ensure, Context};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{line_end, parse_decimal, read_batch, Adapter, Publisher, Subscriber, READ_CHUNK};

/// Longest control line accepted (`INFO` included), in bytes.
const MAX_LINE: usize = 64 * 1024;
/// Largest payload accepted: the NATS server's default `max_payload`. With
/// [`MAX_LINE`] it bounds what the read buffer holds while waiting for the
/// end of a message.
const MAX_PAYLOAD: usize = 1024 * 1024;

/// Connects clients to a NATS server.
#[derive(Debug, Clone)]
pub struct NatsAdapter {
    addr: String,
}

impl NatsAdapter {
    /// An adapter for the server at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

/// The sending half: the socket's write half.
#[derive(Debug)]
pub struct NatsPub {
    write: OwnedWriteHalf,
    buf: BytesMut,
    /// `PUB <room> `, ready to be followed by the length.
    head: Vec<u8>,
    /// `PING`s the reader has seen and not yet answered.
    owed_pongs: Arc<AtomicU32>,
}

/// The receiving half: the socket's read half and its buffer.
#[derive(Debug)]
pub struct NatsSub {
    read: OwnedReadHalf,
    buf: BytesMut,
    /// Messages read during the handshake (none unless someone published
    /// while this client connected).
    pending: Vec<Bytes>,
    owed_pongs: Arc<AtomicU32>,
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    /// A `MSG`'s payload.
    Msg(Bytes),
    Ping,
    Pong,
    /// `+OK` (only in verbose mode).
    Ok,
    Info,
}

/// Takes the first whole operation off the front of `buf`; `None` if there
/// is none yet (`buf` is left as it was). `-ERR` and anything malformed are
/// errors.
fn next_op(buf: &mut BytesMut) -> anyhow::Result<Option<Op>> {
    let Some(eol) = line_end(buf, 0, MAX_LINE)? else {
        return Ok(None);
    };
    let line = &buf[..eol];
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let verb = if line.len() > 3 && line[..3].eq_ignore_ascii_case(b"MSG") && is_space(&line[3]) {
        &line[..3]
    } else {
        &line[..line.iter().position(is_space).unwrap_or(line.len())]
    };
    let op = if verb.eq_ignore_ascii_case(b"MSG") {
        // MSG <subject> <sid> [reply-to] <#bytes>: count the arguments and
        // find the last one in one pass.
        let (mut args, mut last_at, mut in_arg) = (0, 0, false);
        for (i, b) in line.iter().enumerate().skip(verb.len()) {
            if is_space(b) {
                in_arg = false;
            } else if !in_arg {
                (args, last_at, in_arg) = (args + 1, i, true);
            }
        }
        ensure!(
            args == 3 || args == 4,
            "NATS: malformed MSG line {:?}",
            String::from_utf8_lossy(line)
        );
        let last = &line[last_at..];
        let len = parse_decimal(last)? as usize;
        ensure!(len <= MAX_PAYLOAD, "NATS: MSG of {len} bytes");
        let start = eol + 2;
        let total = start + len + 2;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        ensure!(
            &buf[start + len..total] == b"\r\n",
            "NATS: MSG payload not followed by \\r\\n"
        );
        let frame = buf.split_to(total).freeze();
        return Ok(Some(Op::Msg(frame.slice(start..start + len))));
    } else if verb.eq_ignore_ascii_case(b"PING") {
        Op::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        Op::Pong
    } else if verb.eq_ignore_ascii_case(b"+OK") {
        Op::Ok
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        Op::Info
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        bail!("NATS: {}", String::from_utf8_lossy(line))
    } else {
        bail!(
            "NATS: unexpected operation {:?}",
            String::from_utf8_lossy(line)
        )
    };
    buf.advance(eol + 2);
    Ok(Some(op))
}

/// Appends `PUB <room> <len>\r\n<payload>\r\n` (`head` is `PUB <room> `).
fn encode_pub(head: &[u8], payload: &[u8], buf: &mut BytesMut) {
    buf.extend_from_slice(head);
    let _ = write!(buf, "{}\r\n", payload.len());
    buf.extend_from_slice(payload);
    buf.extend_from_slice(b"\r\n");
}

impl Adapter for NatsAdapter {
    type Pub = NatsPub;
    type Sub = NatsSub;

    async fn connect(&self, index: usize, room: &str) -> anyhow::Result<(NatsPub, NatsSub)> {
        ensure!(
            !room.is_empty() && !room.bytes().any(|b| b.is_ascii_whitespace()),
            "invalid NATS subject {room:?}"
        );
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.addr))?;
        stream.set_nodelay(true)?;
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\
             \"name\":\"c{index}\",\"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1,\
             \"echo\":true}}\r\nSUB {room} 1\r\nPING\r\n",
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(hello.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut pending = Vec::new();
        'handshake: loop {
            while let Some(op) = next_op(&mut buf)? {
                match op {
                    Op::Pong => break 'handshake,
                    Op::Ping => stream.write_all(b"PONG\r\n").await?,
                    Op::Msg(p) => pending.push(p),
                    Op::Ok | Op::Info => {}
                }
            }
            buf.reserve(READ_CHUNK);
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("NATS closed the connection during the handshake");
            }
        }
        let (read, write) = stream.into_split();
        let owed_pongs = Arc::new(AtomicU32::new(0));
        Ok((
            NatsPub {
                write,
                buf: BytesMut::with_capacity(256),
                head: format!("PUB {room} ").into_bytes(),
                owed_pongs: owed_pongs.clone(),
            },
            // Whatever followed the PONG stays in `buf`.
            NatsSub {
                read,
                buf,
                pending,
                owed_pongs,
            },
        ))
    }
}

impl Publisher for NatsPub {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.buf.clear();
        // Clients must answer PING (the server pings every 2 minutes by
        // default); the answer rides along with the next send.
        for _ in 0..self.owed_pongs.swap(0, Ordering::Relaxed) {
            self.buf.extend_from_slice(b"PONG\r\n");
        }
        encode_pub(&self.head, &payload, &mut self.buf);
        self.write.write_all(&self.buf).await?;
        Ok(())
    }
}

impl Subscriber for NatsSub {
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> anyhow::Result<bool> {
        let owed_pongs = &self.owed_pongs;
        read_batch(
            &mut self.read,
            &mut self.buf,
            &mut self.pending,
            out,
            "NATS",
            |buf| {
                Ok(next_op(buf)?.map(|op| match op {
                    Op::Msg(p) => Some(p),
                    Op::Ping => {
                        owed_pongs.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Op::Pong | Op::Ok | Op::Info => None,
                }))
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    /// Every operation in `chunks`, fed one chunk at a time.
    fn ops(chunks: &[&[u8]]) -> anyhow::Result<Vec<Op>> {
        crate::adapters::parse_chunks(chunks, next_op)
    }

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
        +OK\r\n\
        MSG bench 1 5\r\nhello\r\n\
        PING\r\n\
        MSG bench 1 _INBOX.abc 7\r\na\r\nb\r\nc\r\n\
        MSG  bench\t1 0\r\n\r\n\
        PONG\r\n\
        msg bench 1 3\r\nMSG\r\n";

    fn expected() -> Vec<Op> {
        vec![
            Op::Info,
            Op::Ok,
            Op::Msg(Bytes::from_static(b"hello")),
            Op::Ping,
            Op::Msg(Bytes::from_static(b"a\r\nb\r\nc")),
            Op::Msg(Bytes::new()),
            Op::Pong,
            Op::Msg(Bytes::from_static(b"MSG")),
        ]
    }

    #[test]
    fn parses_a_stream_split_at_every_position() {
        assert_eq!(ops(&[STREAM]).unwrap(), expected());
        for i in 0..=STREAM.len() {
            assert_eq!(
                ops(&[&STREAM[..i], &STREAM[i..]]).unwrap(),
                expected(),
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(ops(&bytes).unwrap(), expected());
    }

    #[test]
    fn rejects_errors_and_garbage() {
        let err = ops(&[b"-ERR 'Authorization Violation'\r\n"]).unwrap_err();
        assert!(err.to_string().contains("Authorization Violation"), "{err}");
        assert!(ops(&[b"MSG bench 1 5\r\nhelloXX"]).is_err());
        assert!(ops(&[b"MSG bench 5\r\nhello\r\n"]).is_err());
        assert!(ops(&[b"MSG bench 1 a b 5\r\nhello\r\n"]).is_err());
        assert!(ops(&[b"MSG bench 1 x\r\n"]).is_err());
        assert!(ops(&[b"MSG bench 1 2000000\r\n"]).is_err());
        assert!(ops(&[b"HELLO\r\n"]).is_err());
        assert!(ops(&[b"PING\n"]).is_err());
        // A control line without an end is refused once it exceeds the bound.
        let long = vec![b'I'; MAX_LINE + 2];
        assert!(ops(&[&long]).is_err());
        // Incomplete input is not an error, only left over.
        assert_eq!(
            ops(&[b"MSG bench 1 5\r\nhel"]).unwrap_err().to_string(),
            "18 bytes left over"
        );
    }

    #[test]
    fn encodes_pub() {
        let mut buf = BytesMut::new();
        encode_pub(b"PUB bench ", b"hi\r\nyo", &mut buf);
        assert_eq!(&buf[..], b"PUB bench 6\r\nhi\r\nyo\r\n");
    }

    /// A NATS server stand-in on one connection: answers the handshake,
    /// pings the client, then turns each `PUB` into a `MSG` back.
    async fn fake_server(listener: TcpListener) -> Vec<String> {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(b"INFO {}\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await.unwrap() == 0 {
                return seen;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            seen.push(words[0].to_owned());
            match words[0] {
                "PING" => write.write_all(b"PONG\r\nPING\r\n").await.unwrap(),
                "PUB" => {
                    let len: usize = words[2].parse().unwrap();
                    let mut payload = vec![0; len + 2];
                    read.read_exact(&mut payload).await.unwrap();
                    let msg = format!("MSG {} 1 {len}\r\n", words[1]);
                    write.write_all(msg.as_bytes()).await.unwrap();
                    write.write_all(&payload).await.unwrap();
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn connects_publishes_receives_and_answers_pings() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(fake_server(listener));
        let (mut publisher, mut subscriber) =
            NatsAdapter::new(addr).connect(0, "bench").await.unwrap();
        let mut got = Vec::new();
        // The PING sent after the PONG is read here and answered with the
        // first publish.
        publisher.publish(Bytes::from_static(b"one")).await.unwrap();
        while got.is_empty() {
            assert!(subscriber.recv_batch(&mut got).await.unwrap());
        }
        publisher.publish(Bytes::from_static(b"two")).await.unwrap();
        while got.len() < 2 {
            assert!(subscriber.recv_batch(&mut got).await.unwrap());
        }
        assert_eq!(got, [&b"one"[..], &b"two"[..]]);
        drop(publisher);
        drop(subscriber);
        let seen = server.await.unwrap();
        assert_eq!(seen[..3], ["CONNECT", "SUB", "PING"]);
        assert!(seen.contains(&"PONG".to_owned()), "{seen:?}");
    }
}
