//! One adapter per system under test. An adapter connects one simulated
//! client and hands back its two halves: a [`Publisher`] (send loop) and a
//! [`Subscriber`] (receive loop). Everything else (schedule, timestamps,
//! counting, histograms) is common, so the systems are measured the same way.
//!
//! Every adapter speaks its system's wire protocol itself over a tokio
//! `TcpStream` (`TCP_NODELAY` on): one write per publish, reads of up to
//! 64 KiB parsed in place, every whole message of a read handed over in one
//! batch. No client library sits in between, so the generator spends about
//! the same per message on each system and a peer is not held back by the
//! cost of its client (the NATS and Redis client libraries used before cost
//! the single generator core several times what the relais adapter does).

use std::future::Future;

use anyhow::{bail, ensure};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub mod nats;
pub mod redis;
pub mod relais;

pub use self::nats::NatsAdapter;
pub use self::redis::RedisAdapter;
pub use self::relais::RelaisAdapter;

/// The sending half of one client.
pub trait Publisher: Send + 'static {
    /// Sends one payload to the room. Returns once it has been written to
    /// the socket (relais, NATS), or once the server has acknowledged it
    /// (Redis: the integer reply to `PUBLISH`, one command in flight).
    fn publish(&mut self, payload: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The receiving half of one client.
pub trait Subscriber: Send + 'static {
    /// Waits for at least one relayed payload, then appends to `out` every
    /// payload available without waiting further (one receive timestamp then
    /// serves the whole batch). Returns `Ok(false)` once the connection has
    /// ended. Cancel-safe: nothing is lost if the future is dropped.
    fn recv_batch(
        &mut self,
        out: &mut Vec<Bytes>,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Connects clients to one system.
pub trait Adapter: Send + Sync + 'static {
    /// The sending half of a client.
    type Pub: Publisher;
    /// The receiving half of a client.
    type Sub: Subscriber;

    /// Connects client number `index` and joins/subscribes to `room`. When
    /// this returns, the client receives everything published to the room.
    fn connect(
        &self,
        index: usize,
        room: &str,
    ) -> impl Future<Output = anyhow::Result<(Self::Pub, Self::Sub)>> + Send;
}

/// Most payloads one [`Subscriber::recv_batch`] hands over at once (one
/// 64 KiB read holds fewer 64-byte messages than this), so one batch never
/// starves the sender sharing its task.
pub(crate) const MAX_BATCH: usize = 1024;

/// How much one read asks the socket for.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Everything `next` parses out of `chunks`, fed one chunk at a time; an
/// error if bytes are left over (the parser tests of every adapter).
#[cfg(test)]
pub(crate) fn parse_chunks<T>(
    chunks: &[&[u8]],
    mut next: impl FnMut(&mut BytesMut) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Vec<T>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = next(&mut buf)? {
            out.push(item);
        }
    }
    ensure!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(out)
}

/// The receive loop of the NATS and Redis adapters: hands over `pending`
/// (payloads that arrived with the handshake), then parses `buf` with
/// `next` (`Some(Some(payload))` a message, `Some(None)` anything else,
/// `None` "needs more bytes") and reads 64 KiB more until at least one
/// payload is out, at most [`MAX_BATCH`]. Returns `Ok(false)` at a clean end
/// of stream; `system` names the peer in errors. Cancel-safe like
/// [`Subscriber::recv_batch`]: `read_buf` loses nothing.
pub(crate) async fn read_batch<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    pending: &mut Vec<Bytes>,
    out: &mut Vec<Bytes>,
    system: &str,
    mut next: impl FnMut(&mut BytesMut) -> anyhow::Result<Option<Option<Bytes>>>,
) -> anyhow::Result<bool> {
    let before = out.len();
    out.append(pending);
    loop {
        while out.len() - before < MAX_BATCH {
            match next(buf)? {
                Some(Some(payload)) => out.push(payload),
                Some(None) => {}
                None => break,
            }
        }
        if out.len() > before {
            return Ok(true);
        }
        buf.reserve(READ_CHUNK);
        // Nothing is pending in `out` here.
        if read.read_buf(buf).await? == 0 {
            anyhow::ensure!(
                buf.is_empty(),
                "{system} closed the connection inside a message ({} bytes buffered)",
                buf.len()
            );
            return Ok(false);
        }
    }
}

/// Where the line starting at `from` ends: the index of its `\r\n`, or
/// `None` if the line is not all buffered yet. A line longer than `max`
/// bytes, or a `\n` without its `\r`, is a protocol error (this bounds what
/// a parser buffers while waiting for a line's end).
pub(crate) fn line_end(buf: &[u8], from: usize, max: usize) -> anyhow::Result<Option<usize>> {
    let rest = &buf[from..];
    let window = &rest[..rest.len().min(max + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => bail!("protocol error: line starts with a bare \\n"),
        Some(i) => {
            ensure!(window[i - 1] == b'\r', "protocol error: \\n without \\r");
            Ok(Some(from + i - 1))
        }
        None if window.len() >= max + 2 => bail!("protocol error: line longer than {max} bytes"),
        None => Ok(None),
    }
}

/// A decimal number of at most 18 digits (no sign).
pub(crate) fn parse_decimal(digits: &[u8]) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "protocol error: expected a number, got {:?}",
            String::from_utf8_lossy(digits)
        )
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad());
    }
    let mut n = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_line_ends() {
        assert_eq!(line_end(b"PING\r\nx", 0, 16).unwrap(), Some(4));
        assert_eq!(line_end(b"xPING\r\n", 1, 16).unwrap(), Some(5));
        assert_eq!(line_end(b"PING\r", 0, 16).unwrap(), None);
        assert_eq!(line_end(b"", 0, 16).unwrap(), None);
        assert_eq!(line_end(b"PI", 2, 16).unwrap(), None);
        assert!(line_end(b"PING\n", 0, 16).is_err());
        assert!(line_end(b"\n", 0, 16).is_err());
        // A line of exactly `max` bytes passes; one byte more does not.
        assert_eq!(line_end(b"0123\r\n", 0, 4).unwrap(), Some(4));
        assert!(line_end(b"01234\r\n", 0, 4).is_err());
        assert_eq!(line_end(b"01234", 0, 4).unwrap(), None);
        assert!(line_end(b"012345", 0, 4).is_err());
    }

    #[test]
    fn parses_decimals() {
        assert_eq!(parse_decimal(b"0").unwrap(), 0);
        assert_eq!(parse_decimal(b"1048576").unwrap(), 1_048_576);
        assert!(parse_decimal(b"").is_err());
        assert!(parse_decimal(b"-1").is_err());
        assert!(parse_decimal(b"12a").is_err());
        assert!(parse_decimal(b"1234567890123456789").is_err());
    }
}
