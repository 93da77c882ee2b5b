//! One client's session, from handshake to goodbye, generic over the
//! transport. A transport supplies a [`FrameSource`] (frame bodies in) and a
//! [`FrameSink`] (encoded frames out); TCP is one such pair, WebSocket another,
//! and tests can use in-memory pipes.
//!
//! A session runs two loops in one task: the reader (frames from the client
//! into the relay) and the writer (the client's [`Outbox`] onto its socket).
//! Whichever ends first decides the close reason; the session then leaves the
//! room, and the writer gets a bounded time to send a goodbye.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use relais_protocol::frames::kind;
use relais_protocol::{
    validate_name, validate_room, ClientFrame, CloseReason, DecodeError, FrameError, Hello,
    RefuseReason, ServerFrame, DEFAULT_ROOM, MAX_FRAME_LEN, VERSION,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use crate::batching::Batching;
use crate::outbox::{Outbox, PONG_SLOT};
use crate::pacing::{Pace, Pacer, SendQueue};
use crate::rate::{FloodDetector, TokenBucket};
use crate::relay::{Membership, Relay};
use crate::Config;

/// Frame bodies from a client, whatever the transport.
pub trait FrameSource: Send {
    /// The next frame body (type byte first, no length prefix), or `None` when
    /// the client closed the stream between frames. Must be cancel-safe: the
    /// session calls it under timeouts.
    fn next_frame(&mut self) -> impl Future<Output = Result<Option<Bytes>, ReadError>> + Send;

    /// Changes the largest frame body accepted (small before the handshake).
    fn set_max_frame_len(&mut self, max: usize);
}

/// Encoded frames to a client, whatever the transport.
pub trait FrameSink: Send {
    /// Writes a batch of encoded frames (each with its length prefix), in
    /// order, with as few system calls as the transport allows.
    fn send_batch(&mut self, frames: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the sending direction once everything is written.
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// What the connection still holds of what was written (for
    /// [`pacing`](crate::pacing)), or `None` if the transport cannot tell,
    /// which leaves it unpaced.
    fn send_queue(&self) -> Option<SendQueue> {
        None
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The byte stream broke the framing rules.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The transport carried something that is not a protocol frame (for
    /// WebSocket: a text message, or a message larger than the limit).
    #[error("{0}")]
    Transport(String),
}

/// After its last frame, a connection keeps reading (and discarding) for at
/// most this long, waiting for the client to close its side: closing a socket
/// with unread input resets the connection, which can destroy the goodbye in
/// flight.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Serves one client until it leaves, fails, or `shutdown` fires.
pub async fn run<S: FrameSource, W: FrameSink>(
    mut source: S,
    mut sink: W,
    relay: Arc<Relay>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    serve(&mut source, &mut sink, relay, config, shutdown).await;
    linger(&mut source).await;
}

/// Answers a connection the server cannot take with `reason` (e.g. server
/// full): reads its handshake, refuses it, closes.
pub async fn refuse_connection<S: FrameSource, W: FrameSink>(
    mut source: S,
    mut sink: W,
    reason: RefuseReason,
    config: &Config,
    shutdown: &CancellationToken,
) {
    let refuse = async {
        if let Ok(Ok(Some(_))) =
            tokio::time::timeout(config.handshake_timeout, source.next_frame()).await
        {
            let last_words = [refusal(reason, &reason.to_string())];
            send_final(&mut sink, &last_words, config.write_deadline).await;
            linger(&mut source).await;
        }
    };
    tokio::select! {
        () = refuse => {}
        () = shutdown.cancelled() => {}
    }
}

async fn linger<S: FrameSource>(source: &mut S) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(Some(_)) = source.next_frame().await {}
    })
    .await;
}

async fn serve<S: FrameSource, W: FrameSink>(
    source: &mut S,
    sink: &mut W,
    relay: Arc<Relay>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    let first = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, source.next_frame()) => r,
        () = shutdown.cancelled() => return,
    };
    let answer = match first {
        Err(_) => {
            debug!("handshake timed out");
            Err(vec![goodbye(CloseReason::Timeout, "handshake timed out")])
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(vec![protocol_error(&e.to_string())]),
        Ok(Ok(Some(body))) => {
            let is_hello = body.first() == Some(&kind::HELLO);
            match ClientFrame::decode(body) {
                Ok(ClientFrame::Hello(hello)) => Ok(hello),
                Ok(ClientFrame::ListRooms) => Err(room_list(&relay)),
                Ok(other) => Err(vec![protocol_error(&format!(
                    "expected HELLO, got {other:?}"
                ))]),
                Err(DecodeError::InvalidUtf8 { field }) if is_hello => {
                    let reason = if field == "room" {
                        RefuseReason::InvalidRoom
                    } else {
                        RefuseReason::InvalidName
                    };
                    Err(vec![refusal(
                        reason,
                        &format!("{field} is not valid UTF-8"),
                    )])
                }
                Err(e) => Err(vec![protocol_error(&e.to_string())]),
            }
        }
    };
    let hello = match answer {
        Ok(hello) => hello,
        Err(last_words) => return send_final(sink, &last_words, config.write_deadline).await,
    };

    let outbox = Arc::new(Outbox::new(config.max_pending_bytes));
    let membership = match admit(&relay, &hello, outbox.clone()) {
        Ok(m) => m,
        Err((reason, text)) => {
            debug!(name = ?hello.name, %reason, "refused");
            let last_words = [refusal(reason, &text)];
            return send_final(sink, &last_words, config.write_deadline).await;
        }
    };
    let span = tracing::info_span!("client", name = ?membership.name(), room = ?membership.room());
    source.set_max_frame_len(MAX_FRAME_LEN);
    relay_member(source, sink, relay, config, shutdown, membership, outbox)
        .instrument(span)
        .await;
}

/// The life of a registered member: relay its frames, write its outbox.
async fn relay_member<S: FrameSource, W: FrameSink>(
    source: &mut S,
    sink: &mut W,
    relay: Arc<Relay>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    membership: Membership,
    outbox: Arc<Outbox>,
) {
    info!("joined");
    let writer = write_loop(&outbox, sink, &config);
    tokio::pin!(writer);
    let reason = tokio::select! {
        // Reader first: when the client's goodbye and the reset that follows
        // it are seen in one poll, the reason is the goodbye.
        biased;
        reason = read_loop(source, &relay, &membership, &outbox, &config) => reason,
        reason = &mut writer => reason,
        () = shutdown.cancelled() => CloseReason::ServerShutdown,
    };
    relay.leave(membership, reason);
    info!(%reason, "left");
    // The writer sends what is waiting and then the goodbye, unless it is the
    // one that failed (a dead or stalled socket gets no goodbye).
    if !matches!(
        reason,
        CloseReason::SlowConsumer | CloseReason::ConnectionLost
    ) {
        outbox.close(reason);
        let _ = tokio::time::timeout(config.shutdown_grace, &mut writer).await;
    }
}

/// Validates a handshake and registers the client.
fn admit(
    relay: &Relay,
    hello: &Hello,
    outbox: Arc<Outbox>,
) -> Result<Membership, (RefuseReason, String)> {
    if hello.version != VERSION {
        return Err((
            RefuseReason::UnsupportedVersion,
            format!("this server speaks version {VERSION}"),
        ));
    }
    validate_name(&hello.name).map_err(|e| (RefuseReason::InvalidName, e.to_string()))?;
    let room = if hello.room.is_empty() {
        DEFAULT_ROOM
    } else {
        validate_room(&hello.room).map_err(|e| (RefuseReason::InvalidRoom, e.to_string()))?;
        &hello.room
    };
    relay
        .join(room, &hello.name, hello.echo, outbox)
        .map_err(|reason| (reason, format!("{reason}")))
}

/// Reads frames from the client until it leaves or misbehaves; returns why.
async fn read_loop<S: FrameSource>(
    source: &mut S,
    relay: &Relay,
    membership: &Membership,
    outbox: &Outbox,
    config: &Config,
) -> CloseReason {
    let ping = ServerFrame::Ping.to_bytes();
    let pong = ServerFrame::Pong.to_bytes();
    let mut unanswered_pings = 0u32;
    let now = Instant::now();
    let mut bucket = TokenBucket::new(config.max_message_rate, config.message_burst, now);
    let mut flood = FloodDetector::new(
        u64::from(config.max_message_rate) * u64::from(config.flood_factor),
        config.flood_seconds,
        now,
    );
    // The newest message sent over the rate, relayed when a token frees up.
    let mut held: Option<Bytes> = None;
    // One keepalive timer for the whole session, not one per frame: a frame
    // only records when it came; the timer, when it fires, checks whether
    // the client has really been silent for a whole interval.
    let mut last_heard = now;
    let silence = tokio::time::sleep_until(now + config.keepalive_interval);
    tokio::pin!(silence);
    loop {
        let next = async {
            match held {
                Some(_) => tokio::time::sleep_until(bucket.next_token_at()).await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            r = source.next_frame() => r,
            () = &mut silence => {
                let now = Instant::now();
                let quiet_until = last_heard + config.keepalive_interval;
                if quiet_until > now {
                    silence.as_mut().reset(quiet_until);
                    continue;
                }
                if unanswered_pings >= 2 {
                    return CloseReason::Timeout;
                }
                unanswered_pings += 1;
                outbox.push_event(ping.clone());
                silence.as_mut().reset(now + config.keepalive_interval);
                continue;
            }
            () = next => {
                if bucket.try_take(Instant::now()) {
                    if let Some(payload) = held.take() {
                        relay.publish(membership, &payload);
                    }
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(Some(body)) => body,
            Ok(None) => return CloseReason::ConnectionLost,
            Err(ReadError::Io(e)) => {
                debug!(error = %e, "read failed");
                return CloseReason::ConnectionLost;
            }
            Err(e) => {
                debug!(error = %e, "bad frame");
                return CloseReason::ProtocolError;
            }
        };
        let now = Instant::now();
        last_heard = now;
        unanswered_pings = 0;
        match ClientFrame::decode(frame) {
            Ok(ClientFrame::Data(payload)) => {
                if flood.record(now) {
                    return CloseReason::RateLimit;
                }
                if held.is_none() && bucket.try_take(now) {
                    relay.publish(membership, &payload);
                } else {
                    held = Some(payload);
                }
            }
            Ok(ClientFrame::Ping) => outbox.push_message(PONG_SLOT, pong.clone()),
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Goodbye(..)) => {
                // A client's last word is relayed even if it was over the rate.
                if let Some(payload) = held.take() {
                    relay.publish(membership, &payload);
                }
                return CloseReason::Normal;
            }
            Ok(other @ (ClientFrame::Hello(_) | ClientFrame::ListRooms)) => {
                debug!(frame = ?other, "handshake frame after the handshake");
                return CloseReason::ProtocolError;
            }
            Err(e) => {
                debug!(error = %e, "bad frame");
                return CloseReason::ProtocolError;
            }
        }
    }
}

/// Writes whatever waits in the outbox, batch by batch, until the outbox is
/// closed (then a goodbye follows) or the socket fails or stalls. Batches
/// are paced (see [`crate::pacing`]): while the connection holds more than
/// it drains in a short while, what waits stays in the outbox, conflated.
async fn write_loop<W: FrameSink>(outbox: &Outbox, sink: &mut W, config: &Config) -> CloseReason {
    let mut batch = Vec::new();
    let mut batching = Batching::new(config.flush_interval, Instant::now());
    let mut pacer = Pacer::new(config.write_deadline);
    loop {
        // A busy recipient is written to at most once per flush interval
        // (what arrives meanwhile joins the batch); a quiet one at once.
        if let Some(next) = batching.next_write() {
            if next > Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        // While the connection holds more than it drains in a short while,
        // wait: what waits in the outbox meanwhile is conflated.
        loop {
            match pacer.pace(Instant::now(), || sink.send_queue()) {
                Pace::Write => break,
                Pace::Wait(wait) => tokio::time::sleep(wait).await,
                Pace::Stalled => return CloseReason::SlowConsumer,
            }
            if outbox.close_reason() == Some(CloseReason::SlowConsumer) {
                return CloseReason::SlowConsumer;
            }
        }
        let closed = outbox.drain(&mut batch);
        if closed == Some(CloseReason::SlowConsumer) {
            return CloseReason::SlowConsumer;
        }
        if !batch.is_empty() {
            pacer.written(batch.iter().map(Bytes::len).sum());
            match tokio::time::timeout(config.write_deadline, sink.send_batch(&batch)).await {
                Err(_) => return CloseReason::SlowConsumer,
                Ok(Err(e)) => {
                    debug!(error = %e, "write failed");
                    return CloseReason::ConnectionLost;
                }
                Ok(Ok(())) => {
                    batching.wrote(Instant::now(), batch.len());
                    batch.clear();
                }
            }
        }
        if let Some(reason) = closed {
            // The goodbye is best effort: the connection ends either way.
            send_final(sink, &[goodbye(reason, "")], config.write_deadline).await;
            return reason;
        }
        outbox.wait().await;
    }
}

/// Sends the last frames of a connection and closes it, giving up after
/// `deadline` (a peer that does not read cannot hold the session).
async fn send_final<W: FrameSink>(sink: &mut W, frames: &[Bytes], deadline: Duration) {
    let _ = tokio::time::timeout(deadline, async {
        if sink.send_batch(frames).await.is_ok() {
            let _ = sink.close().await;
        }
    })
    .await;
}

fn goodbye(reason: CloseReason, text: &str) -> Bytes {
    ServerFrame::Goodbye(reason, text.to_string()).to_bytes()
}

fn protocol_error(text: &str) -> Bytes {
    debug!(?text, "protocol error before the handshake");
    goodbye(CloseReason::ProtocolError, text)
}

fn refusal(reason: RefuseReason, text: &str) -> Bytes {
    ServerFrame::Refused(reason, text.to_string()).to_bytes()
}

/// The answer to `LIST_ROOMS`: the rooms in as many `ROOM_LIST` frames as
/// needed.
fn room_list(relay: &Relay) -> Vec<Bytes> {
    /// Rooms per frame: 900 entries of at most 69 bytes fit in a frame.
    const PER_FRAME: usize = 900;
    let rooms = relay.rooms();
    let chunks: Vec<&[relais_protocol::RoomInfo]> = if rooms.is_empty() {
        vec![&[]]
    } else {
        rooms.chunks(PER_FRAME).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            ServerFrame::RoomList {
                rooms: chunk.to_vec(),
                more: i < last,
            }
            .to_bytes()
        })
        .collect()
}
