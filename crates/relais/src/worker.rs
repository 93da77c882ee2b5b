//! The two background threads of a connection.
//!
//! - The **reader** blocks in `read()`, splits the bytes into frames, pushes
//!   messages and presence events to the inbound queue, keeps the member list
//!   current, asks the writer to answer `PING`s, and runs the keepalive: the
//!   socket's read timeout is the keepalive interval, so a timed-out read
//!   means a silent interval.
//! - The **writer** sleeps on a condvar until there is something to send,
//!   then encodes *everything* queued into one buffer and writes it with one
//!   `write_all`: under load, one syscall carries many messages.
//!
//! Whichever thread sees the connection end records why ([`Shared::end`])
//! and shuts the socket down in both directions, which wakes the other
//! thread even if it is blocked in `read()` or `write()`.
//!
//! Both read and write a [`Transport`]: the socket itself, or TLS over it
//! (see `tls.rs` for how the two threads share a TLS session).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;

use bytes::{Bytes, BytesMut};
use relais_protocol::frames::encode_data;
use relais_protocol::{ClientFrame, CloseReason, FrameDecoder, ServerFrame, MAX_FRAME_LEN};

use crate::client::{Event, Message};
use crate::error::Disconnect;
use crate::shared::Shared;
use crate::transport::Transport;

/// Bytes asked of the kernel per `read()`.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Consecutive silent keepalive intervals after which the server is
/// declared gone: the first two each send a `PING`, the third gives up.
const SILENT_INTERVALS_LIMIT: u32 = 3;

/// A batch buffer that grew past this (a burst of large payloads) is freed
/// after use rather than kept for the life of the connection.
const BATCH_RETAIN_LIMIT: usize = 1024 * 1024;

/// The reader thread. `buf` holds bytes the handshake read past `WELCOME`.
pub(crate) fn run_reader(shared: &Shared, mut stream: Transport, mut buf: BytesMut) {
    let reason = read_until_end(shared, &mut stream, &mut buf);
    shared.end(reason);
    let _ = stream.socket().shutdown(Shutdown::Both);
    shared.reader_finished();
}

/// Reads and dispatches frames until the connection ends; returns why.
fn read_until_end(shared: &Shared, stream: &mut Transport, buf: &mut BytesMut) -> Disconnect {
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut silent_intervals = 0;
    loop {
        loop {
            match decoder.decode(buf) {
                Ok(Some(body)) => {
                    if let Err(reason) = dispatch(shared, body) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(e) => return Disconnect::Protocol(e.to_string()),
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Disconnect::ConnectionLost(match decoder.decode_eof(buf) {
                    Ok(()) => "the server closed the connection without a goodbye".into(),
                    Err(e) => e.to_string(),
                })
            }
            Ok(n) => {
                silent_intervals = 0;
                buf.extend_from_slice(&chunk[..n]);
                if stream.wants_flush() {
                    shared.request_flush();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The read timeout is the keepalive interval (Unix reports it as
            // WouldBlock, Windows as TimedOut).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                silent_intervals += 1;
                if silent_intervals >= SILENT_INTERVALS_LIMIT {
                    return Disconnect::Timeout;
                }
                shared.request_ping();
            }
            Err(e) => return Disconnect::ConnectionLost(e.to_string()),
        }
    }
}

/// Acts on one frame from the server; `Err` ends the connection.
fn dispatch(shared: &Shared, body: Bytes) -> Result<(), Disconnect> {
    let frame = ServerFrame::decode(body).map_err(|e| Disconnect::Protocol(e.to_string()))?;
    match frame {
        ServerFrame::Message { sender, payload } => {
            // A copy: a slice would keep the whole read buffer it came from
            // alive for as long as the message waits in the receive queue.
            let payload = Bytes::copy_from_slice(&payload);
            shared.push_event(Event::Message(Message { sender, payload }));
        }
        ServerFrame::Joined(name) => {
            // The list is updated before the event is queued, so a user who
            // reads the event already finds the member listed.
            shared.member_joined(&name);
            shared.push_event(Event::Joined(name));
        }
        ServerFrame::Left(name, reason) => {
            shared.member_left(&name);
            shared.push_event(Event::Left { name, reason });
        }
        ServerFrame::Ping => shared.request_pong(),
        // Any byte already reset the keepalive count; nothing else to do.
        ServerFrame::Pong => {}
        ServerFrame::Goodbye(reason, message) => {
            return Err(Disconnect::Goodbye { reason, message })
        }
        other @ (ServerFrame::Welcome(_)
        | ServerFrame::Refused(..)
        | ServerFrame::RoomList { .. }) => {
            return Err(Disconnect::Protocol(format!(
                "unexpected {} frame after the handshake",
                frame_name(&other)
            )));
        }
    }
    Ok(())
}

/// The writer thread.
pub(crate) fn run_writer(shared: &Shared, mut stream: Transport) {
    let mut payloads = VecDeque::new();
    let mut batch = BytesMut::new();
    while let Some(work) = shared.next_work(&mut payloads) {
        if work.pong {
            ClientFrame::Pong.encode(&mut batch);
        }
        if work.ping {
            ClientFrame::Ping.encode(&mut batch);
        }
        let count = payloads.len();
        for payload in payloads.drain(..) {
            encode_data(&payload, &mut batch);
        }
        if work.closing {
            ClientFrame::Goodbye(CloseReason::Normal, String::new()).encode(&mut batch);
        }
        // `flush` writes nothing on a plain socket; under TLS it sends any
        // records of the TLS layer's own (see `Shared::request_flush`).
        if let Err(e) = stream.write_all(&batch).and_then(|()| stream.flush()) {
            shared.end(Disconnect::ConnectionLost(e.to_string()));
            let _ = stream.socket().shutdown(Shutdown::Both);
            break;
        }
        shared.count_sent(count);
        if work.closing {
            // The server reads our GOODBYE, then end of stream.
            let _ = stream.shutdown_write();
            break;
        }
        batch.clear();
        if batch.capacity() > BATCH_RETAIN_LIMIT {
            batch = BytesMut::new();
        }
    }
    shared.writer_finished();
}

/// The name of a server frame's type, for error messages (never the
/// payload, which may be large or binary).
pub(crate) fn frame_name(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "WELCOME",
        ServerFrame::Refused(..) => "REFUSED",
        ServerFrame::Message { .. } => "MESSAGE",
        ServerFrame::Joined(_) => "JOINED",
        ServerFrame::Left(..) => "LEFT",
        ServerFrame::RoomList { .. } => "ROOM_LIST",
        ServerFrame::Ping => "PING",
        ServerFrame::Pong => "PONG",
        ServerFrame::Goodbye(..) => "GOODBYE",
    }
}
