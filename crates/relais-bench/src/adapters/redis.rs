//! Redis pub/sub over raw RESP2, with tokio: per client, one connection
//! subscribed to the room's channel and one connection that `PUBLISH`es to
//! it (a subscribed connection can do nothing else). Redis delivers a
//! message to every subscriber, the publisher's own subscriber connection
//! included, which is the workload's echo. No client library, so the
//! generator spends on a Redis client about what it spends on a relais one.
//!
//! Subscribing: `SUBSCRIBE <room>`, then read until Redis confirms it (the
//! `subscribe` push): from then on the connection receives every message
//! published to the channel.
//!
//! Publishing: one write of `PUBLISH <room> <payload>` per send, then a read
//! of its integer reply (the number of subscribers reached). One command is
//! in flight at a time, no pipelining: `publish` returns once Redis has
//! acknowledged the message, so a Redis that falls behind holds its
//! publishers back, as it would a real client waiting for its reply. That
//! costs one read per send more than relais or NATS, against N reads of
//! deliveries per send on the subscribed side.
//!
//! Reads: up to 64 KiB per system call, every whole `message` push in it
//! parsed in place (the payload is a slice of the read buffer, no copy).
//! `TCP_NODELAY` is set on both connections.

use std::fmt::Write as _;

use anyhow::{bail, ensure, Context};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::{line_end, parse_decimal, read_batch, Adapter, Publisher, Subscriber, READ_CHUNK};

/// Longest line (simple string, error, or a length) accepted, in bytes.
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string accepted. With [`MAX_LINE`] it bounds what a read
/// buffer holds while waiting for the end of a reply.
const MAX_BULK: usize = 1024 * 1024;
/// Most elements in a push (`pmessage` has 4).
const MAX_ARRAY: usize = 8;

/// Connects clients to a Redis server.
#[derive(Debug, Clone)]
pub struct RedisAdapter {
    addr: String,
}

impl RedisAdapter {
    /// An adapter for the server at `addr` (`host:port`).
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        ensure!(!addr.is_empty(), "empty Redis address");
        Ok(Self {
            addr: addr.to_owned(),
        })
    }

    async fn dial(&self, what: &str) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting the Redis {what} to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// The sending half: the publishing connection.
#[derive(Debug)]
pub struct RedisPub {
    stream: TcpStream,
    buf: BytesMut,
    /// `*3\r\n$7\r\nPUBLISH\r\n$<len>\r\n<room>\r\n`.
    head: Vec<u8>,
    replies: BytesMut,
    /// Commands written whose reply has not been read (more than 0 between
    /// calls only if a `publish` was cancelled).
    unacked: usize,
}

/// The receiving half: the subscribed connection's read half and buffer.
#[derive(Debug)]
pub struct RedisSub {
    read: OwnedReadHalf,
    /// Kept open (a subscribed connection is never written to again).
    _write: tokio::net::tcp::OwnedWriteHalf,
    buf: BytesMut,
    /// Messages read before the subscription was confirmed (none expected).
    pending: Vec<Bytes>,
}

/// One RESP2 item; ranges are offsets into the buffer parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Simple(usize, usize),
    Error(usize, usize),
    Int(i64),
    Bulk(usize, usize),
    /// A nil bulk string or array.
    Nil,
    /// An array header: this many items follow.
    Array(usize),
}

fn parse_int(text: &[u8]) -> anyhow::Result<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => Ok(-(parse_decimal(digits)? as i64)),
        None => Ok(parse_decimal(text)? as i64),
    }
}

/// Parses the item starting at `at`: the item and where the next one
/// starts, or `None` if it is not all buffered yet.
fn item(buf: &[u8], at: usize) -> anyhow::Result<Option<(Item, usize)>> {
    if at >= buf.len() {
        return Ok(None);
    }
    let Some(eol) = line_end(buf, at, MAX_LINE)? else {
        return Ok(None);
    };
    let text = &buf[at + 1..eol];
    let next = eol + 2;
    let item = match buf[at] {
        b'+' => Item::Simple(at + 1, eol),
        b'-' => Item::Error(at + 1, eol),
        b':' => Item::Int(parse_int(text)?),
        b'$' if text == b"-1" => Item::Nil,
        b'$' => {
            let len = parse_decimal(text)? as usize;
            ensure!(len <= MAX_BULK, "Redis: bulk string of {len} bytes");
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            ensure!(
                &buf[end..end + 2] == b"\r\n",
                "Redis: bulk string not followed by \\r\\n"
            );
            return Ok(Some((Item::Bulk(next, end), end + 2)));
        }
        b'*' if text == b"-1" => Item::Nil,
        b'*' => {
            let n = parse_decimal(text)? as usize;
            ensure!(n <= MAX_ARRAY, "Redis: array of {n} items");
            Item::Array(n)
        }
        other => bail!("Redis: unexpected reply type {:?}", char::from(other)),
    };
    Ok(Some((item, next)))
}

/// How every `message` push starts.
const MESSAGE_HEAD: &[u8] = b"*3\r\n$7\r\nmessage\r\n";

/// A push on the subscribed connection.
#[derive(Debug, PartialEq, Eq)]
enum Push {
    /// `message`: the payload.
    Message(Bytes),
    /// `subscribe`: the channel now subscribed.
    Subscribed(Bytes),
    /// Any other push (`unsubscribe`, `pong`, ...).
    Other,
}

/// Takes the first whole push off the front of `buf`; `None` if there is
/// none yet (`buf` is left as it was). An error reply or anything that is
/// not an array of strings and integers is an error.
fn next_push(buf: &mut BytesMut) -> anyhow::Result<Option<Push>> {
    if buf.starts_with(MESSAGE_HEAD) {
        // Hot path: a `message` push; then come the channel and the payload.
        let Some((channel, at)) = item(buf, MESSAGE_HEAD.len())? else {
            return Ok(None);
        };
        let Some((payload, end)) = item(buf, at)? else {
            return Ok(None);
        };
        if let (Item::Bulk(..), Item::Bulk(p0, p1)) = (channel, payload) {
            let frame = buf.split_to(end).freeze();
            return Ok(Some(Push::Message(frame.slice(p0..p1))));
        }
        // Anything else: the general path below deals with it.
    }
    let Some((head, mut at)) = item(buf, 0)? else {
        return Ok(None);
    };
    let n = match head {
        Item::Array(n) if n > 0 => n,
        Item::Error(a, b) => bail!("Redis: {}", String::from_utf8_lossy(&buf[a..b])),
        other => bail!("Redis: unexpected reply on the subscribed connection: {other:?}"),
    };
    let mut items = [Item::Nil; MAX_ARRAY];
    for slot in &mut items[..n] {
        let Some((it, next)) = item(buf, at)? else {
            return Ok(None);
        };
        ensure!(
            !matches!(it, Item::Array(_)),
            "Redis: nested array in a push"
        );
        *slot = it;
        at = next;
    }
    let Item::Bulk(k0, k1) = items[0] else {
        bail!("Redis: push without a kind: {:?}", items[0]);
    };
    let push = match (&buf[k0..k1], n, items[1], items[2]) {
        (b"message", 3, _, Item::Bulk(p0, p1)) => {
            let frame = buf.split_to(at).freeze();
            return Ok(Some(Push::Message(frame.slice(p0..p1))));
        }
        (b"subscribe", 3, Item::Bulk(c0, c1), _) => {
            let frame = buf.split_to(at).freeze();
            return Ok(Some(Push::Subscribed(frame.slice(c0..c1))));
        }
        _ => Push::Other,
    };
    buf.advance(at);
    Ok(Some(push))
}

/// Takes the first whole reply off the front of `buf` if it is an integer;
/// `None` if there is none yet. Anything else is an error.
fn next_int_reply(buf: &mut BytesMut) -> anyhow::Result<Option<i64>> {
    let Some((reply, next)) = item(buf, 0)? else {
        return Ok(None);
    };
    let n = match reply {
        Item::Int(n) => n,
        Item::Error(a, b) => bail!("Redis: {}", String::from_utf8_lossy(&buf[a..b])),
        other => bail!("Redis: expected an integer reply, got {other:?}"),
    };
    buf.advance(next);
    Ok(Some(n))
}

/// Appends one bulk string.
fn encode_bulk(s: &[u8], buf: &mut BytesMut) {
    let _ = write!(buf, "${}\r\n", s.len());
    buf.extend_from_slice(s);
    buf.extend_from_slice(b"\r\n");
}

/// A command: an array of bulk strings.
fn encode_command(args: &[&[u8]], buf: &mut BytesMut) {
    let _ = write!(buf, "*{}\r\n", args.len());
    for a in args {
        encode_bulk(a, buf);
    }
}

impl Adapter for RedisAdapter {
    type Pub = RedisPub;
    type Sub = RedisSub;

    async fn connect(&self, _index: usize, room: &str) -> anyhow::Result<(RedisPub, RedisSub)> {
        let mut sub = self.dial("subscriber").await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        encode_command(&[b"SUBSCRIBE", room.as_bytes()], &mut buf);
        sub.write_all(&buf).await?;
        buf.clear();
        let mut pending = Vec::new();
        'confirm: loop {
            while let Some(push) = next_push(&mut buf)? {
                match push {
                    Push::Subscribed(channel) if channel == room.as_bytes() => break 'confirm,
                    Push::Message(p) => pending.push(p),
                    Push::Subscribed(_) | Push::Other => {}
                }
            }
            buf.reserve(READ_CHUNK);
            if sub.read_buf(&mut buf).await? == 0 {
                bail!("Redis closed the subscriber connection before confirming SUBSCRIBE");
            }
        }
        let (read, write) = sub.into_split();

        let mut head = BytesMut::new();
        let _ = write!(head, "*3\r\n");
        encode_bulk(b"PUBLISH", &mut head);
        encode_bulk(room.as_bytes(), &mut head);
        Ok((
            RedisPub {
                stream: self.dial("publisher").await?,
                buf: BytesMut::with_capacity(256),
                head: head.to_vec(),
                replies: BytesMut::with_capacity(64),
                unacked: 0,
            },
            // Whatever followed the confirmation stays in `buf`.
            RedisSub {
                read,
                _write: write,
                buf,
                pending,
            },
        ))
    }
}

impl Publisher for RedisPub {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&self.head);
        encode_bulk(&payload, &mut self.buf);
        self.stream.write_all(&self.buf).await?;
        self.unacked += 1;
        loop {
            while let Some(_receivers) = next_int_reply(&mut self.replies)? {
                self.unacked = self.unacked.saturating_sub(1);
            }
            if self.unacked == 0 {
                return Ok(());
            }
            self.replies.reserve(64);
            if self.stream.read_buf(&mut self.replies).await? == 0 {
                bail!("Redis closed the publisher connection");
            }
        }
    }
}

impl Subscriber for RedisSub {
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> anyhow::Result<bool> {
        read_batch(
            &mut self.read,
            &mut self.buf,
            &mut self.pending,
            out,
            "Redis",
            |buf| {
                Ok(next_push(buf)?.map(|push| match push {
                    Push::Message(p) => Some(p),
                    Push::Subscribed(_) | Push::Other => None,
                }))
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn pushes(chunks: &[&[u8]]) -> anyhow::Result<Vec<Push>> {
        crate::adapters::parse_chunks(chunks, next_push)
    }

    fn ints(chunks: &[&[u8]]) -> anyhow::Result<Vec<i64>> {
        crate::adapters::parse_chunks(chunks, next_int_reply)
    }

    const STREAM: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n\
        *3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$5\r\nhello\r\n\
        *3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$7\r\na\r\nb\r\nc\r\n\
        *3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$0\r\n\r\n\
        *4\r\n$8\r\npmessage\r\n$2\r\nb*\r\n$5\r\nbench\r\n$1\r\nx\r\n\
        *2\r\n$4\r\npong\r\n$0\r\n\r\n\
        *3\r\n$11\r\nunsubscribe\r\n$5\r\nbench\r\n:0\r\n";

    fn expected() -> Vec<Push> {
        vec![
            Push::Subscribed(Bytes::from_static(b"bench")),
            Push::Message(Bytes::from_static(b"hello")),
            Push::Message(Bytes::from_static(b"a\r\nb\r\nc")),
            Push::Message(Bytes::new()),
            Push::Other,
            Push::Other,
            Push::Other,
        ]
    }

    #[test]
    fn parses_pushes_split_at_every_position() {
        assert_eq!(pushes(&[STREAM]).unwrap(), expected());
        for i in 0..=STREAM.len() {
            assert_eq!(
                pushes(&[&STREAM[..i], &STREAM[i..]]).unwrap(),
                expected(),
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(pushes(&bytes).unwrap(), expected());
    }

    #[test]
    fn parses_integer_replies_split_at_every_position() {
        let stream = b":3\r\n:0\r\n:-1\r\n:1234567\r\n";
        for i in 0..=stream.len() {
            assert_eq!(
                ints(&[&stream[..i], &stream[i..]]).unwrap(),
                [3, 0, -1, 1_234_567],
                "split at {i}"
            );
        }
    }

    #[test]
    fn rejects_errors_and_garbage() {
        let err = ints(&[b"-ERR unknown command\r\n"]).unwrap_err();
        assert!(err.to_string().contains("unknown command"), "{err}");
        let err = pushes(&[b"-NOPERM no\r\n"]).unwrap_err();
        assert!(err.to_string().contains("NOPERM"), "{err}");
        assert!(ints(&[b"+OK\r\n"]).is_err());
        assert!(ints(&[b":x\r\n"]).is_err());
        assert!(pushes(&[b":1\r\n"]).is_err());
        assert!(pushes(&[b"*0\r\n"]).is_err());
        assert!(pushes(&[b"*9\r\n"]).is_err());
        assert!(pushes(&[b"*1\r\n*1\r\n"]).is_err());
        assert!(pushes(&[b"*1\r\n:1\r\n"]).is_err());
        assert!(pushes(&[b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$2\r\nhiXX"]).is_err());
        assert!(pushes(&[b"*1\r\n$2000000\r\n"]).is_err());
        assert!(pushes(&[b"?\r\n"]).is_err());
        // A `message` whose payload is not a string is skipped, not taken.
        assert_eq!(
            pushes(&[b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n:1\r\n"]).unwrap(),
            [Push::Other]
        );
        let long = vec![b'+'; MAX_LINE + 2];
        assert!(pushes(&[&long]).is_err());
        // Incomplete input is not an error, only left over.
        assert_eq!(
            pushes(&[b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$5\r\nhel"])
                .unwrap_err()
                .to_string(),
            "35 bytes left over"
        );
    }

    #[test]
    fn encodes_commands() {
        let mut buf = BytesMut::new();
        encode_command(&[b"SUBSCRIBE", b"bench"], &mut buf);
        assert_eq!(&buf[..], b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n");
    }

    /// A Redis stand-in: the subscriber connection, then the publisher's;
    /// each `PUBLISH` is answered and pushed to the subscriber.
    async fn fake_server(listener: TcpListener, publishes: usize) {
        let (mut sub, _) = listener.accept().await.unwrap();
        let subscribe = b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n";
        let mut cmd = [0; 30];
        sub.read_exact(&mut cmd).await.unwrap();
        assert_eq!(&cmd, subscribe);
        sub.write_all(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n")
            .await
            .unwrap();
        let (mut publisher, _) = listener.accept().await.unwrap();
        let head = b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$3\r\n";
        for _ in 0..publishes {
            let mut cmd = [0; 32 + 5];
            publisher.read_exact(&mut cmd).await.unwrap();
            assert_eq!(&cmd[..32], head);
            let mut push = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$3\r\n".to_vec();
            push.extend_from_slice(&cmd[32..]);
            // The reply comes in two pieces, the push in one.
            publisher.write_all(b":").await.unwrap();
            sub.write_all(&push).await.unwrap();
            publisher.write_all(b"1\r\n").await.unwrap();
        }
        let mut rest = Vec::new();
        publisher.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn connects_publishes_and_receives() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(fake_server(listener, 2));
        let (mut publisher, mut subscriber) = RedisAdapter::new(&addr)
            .unwrap()
            .connect(0, "bench")
            .await
            .unwrap();
        publisher.publish(Bytes::from_static(b"one")).await.unwrap();
        publisher.publish(Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(publisher.unacked, 0);
        let mut got = Vec::new();
        while got.len() < 2 {
            assert!(subscriber.recv_batch(&mut got).await.unwrap());
        }
        assert_eq!(got, [&b"one"[..], &b"two"[..]]);
        drop(publisher);
        server.await.unwrap();
    }
}
