//! One client's session, from handshake to goodbye, generic over the
//! transport. A transport supplies a [`FrameSource`] (frame bodies in) and a
//! [`FrameSink`] (encoded frames out); TCP is one such pair, WebSocket another,
//! and tests can use in-memory pipes.
//!
//! A session runs two loops in one task: the reader (frames from the client
//! into the relay) and the writer (the client's [`Outbox`] onto its socket).
//! Whichever ends first decides the close reason; the session then leaves the
//! room, and the writer gets a bounded time to send a goodbye.
//!
//! A member that can resume (its `HELLO` set `FLAG_RESUME`) and whose
//! connection is lost, times out or is dropped as a slow consumer does not
//! leave at once: its seat is parked ([`Relay::park`]) and the session, its
//! connection closed and its admission given back, waits out the resume
//! grace. If no connection takes the seat back ([`Relay::resume`]) in time,
//! the member leaves then, with the original reason. A connection whose seat
//! another one took back ends without a word: no `LEFT`, no `GOODBYE`.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use relais_protocol::frames::kind;
use relais_protocol::{
    normalize_name, normalize_room, ClientFrame, CloseReason, DecodeError, FrameError, Hello,
    NameError, RefuseReason, ServerFrame, DEFAULT_ROOM, MAX_FRAME_LEN, VERSION,
};
use tokio::time::Instant;
use tracing::{debug, info, Instrument};

use crate::auth;
use crate::batching::Batching;
use crate::budget::Charge;
use crate::config::MAX_RESUME_GRACE;
use crate::outbox::{Batch, Outbox, PONG_SLOT};
use crate::pacing::{Pace, Pacer, SendQueue};
use crate::rate::{FloodDetector, TokenBucket};
use crate::relay::{Membership, Relay, RoomHandle, Seat};
use crate::{Admission, Config, Refusal, ServerContext};

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
pub const LINGER: Duration = Duration::from_secs(1);

/// How long a refused connection is kept for its answer: the `REFUSED`
/// written at once, then reading what the client still sends (its `HELLO`)
/// so that closing does not reset the connection under the answer.
pub const REFUSE_LINGER: Duration = Duration::from_millis(250);

/// Most bytes one session pulls from its late-joiner snapshot at a time.
const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// While the memory budget is spent, a held message is retried this often.
const OVERLOAD_RETRY: Duration = Duration::from_millis(10);

/// Serves one client until it leaves, fails, or `shutdown` fires; then, if
/// its seat was parked, waits out the resume grace without the connection.
pub async fn run<S: FrameSource, W: FrameSink>(
    mut source: S,
    mut sink: W,
    ctx: Arc<ServerContext>,
    mut admission: Admission,
) {
    let parked = serve(&mut source, &mut sink, &ctx, &mut admission).await;
    linger(&mut source, LINGER).await;
    if let Some(parked) = parked {
        // The connection is over: its socket, its slot, its address's
        // count and its buffers go now, not when the grace period ends.
        drop((source, sink, admission));
        parked.wait_out(&ctx).await;
    }
}

/// The close reasons after which a resumable member's seat is parked: the
/// connection failed, not the member (PROTOCOL.md, section 17).
const PARKED_REASONS: [CloseReason; 3] = [
    CloseReason::ConnectionLost,
    CloseReason::Timeout,
    CloseReason::SlowConsumer,
];

/// A seat parked when its connection ended, waiting for a resume.
struct Parked {
    membership: Membership,
    /// Why its connection ended: the reason of its `LEFT` if it is not
    /// resumed in time.
    reason: CloseReason,
    /// When the grace period ends.
    until: Instant,
    /// The member's span, for what is logged meanwhile.
    span: tracing::Span,
}

impl Parked {
    /// Until the seat is taken back (nothing to do), or the grace period
    /// ends or the server shuts down (the member leaves, with the reason
    /// its connection ended). Whichever of a resume and this leave takes
    /// the room lock first wins ([`Relay::leave`] checks the attachment).
    async fn wait_out(self, ctx: &ServerContext) {
        let Self {
            membership,
            reason,
            until,
            span,
        } = self;
        async move {
            tokio::select! {
                biased;
                () = membership.taken_over() => return,
                () = tokio::time::sleep_until(until) => {}
                () = ctx.shutdown.cancelled() => {}
            }
            if ctx.relay.leave(membership, reason) {
                info!(%reason, "left: not resumed in time");
            }
        }
        .instrument(span)
        .await;
    }
}

/// How long a refused connection has for its TLS handshake and then, on
/// the WebSocket port, for its request head (it needs the upgrade before
/// it can be told why it is refused).
pub const REFUSED_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection has for each phase of its handshake (TLS, HTTP
/// upgrade, `HELLO`): shorter for one that is only told why not.
pub fn handshake_timeout(config: &Config, admission: &Result<Admission, Refusal>) -> Duration {
    match admission {
        Ok(_) => config.handshake_timeout,
        Err(_) => REFUSED_HEAD_TIMEOUT.min(config.handshake_timeout),
    }
}

/// Serves an admitted connection ([`run`]), or answers a refused one
/// ([`refuse_connection`]).
pub async fn serve_or_refuse<S: FrameSource, W: FrameSink>(
    source: S,
    sink: W,
    ctx: Arc<ServerContext>,
    admission: Result<Admission, Refusal>,
    peer: std::net::SocketAddr,
) {
    match admission {
        Ok(admission) => run(source, sink, ctx, admission).await,
        Err(refusal) => {
            debug!(%peer, reason = %refusal.reason, "refused");
            refuse_connection(source, sink, refusal, &ctx).await
        }
    }
}

/// Answers a connection the server does not take: the `REFUSED` frame at
/// once (the client's `HELLO` is not waited for), then closes within
/// [`REFUSE_LINGER`].
pub async fn refuse_connection<S: FrameSource, W: FrameSink>(
    mut source: S,
    mut sink: W,
    refused: Refusal,
    ctx: &ServerContext,
) {
    let reason = refused.reason;
    let refuse = async {
        let last_words = [refusal(reason, &reason.to_string())];
        send_final(&mut sink, &last_words, REFUSE_LINGER).await;
        linger(&mut source, REFUSE_LINGER).await;
    };
    tokio::select! {
        () = refuse => {}
        () = ctx.shutdown.cancelled() => {}
    }
}

async fn linger<S: FrameSource>(source: &mut S, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        while let Ok(Some(_)) = source.next_frame().await {}
    })
    .await;
}

/// The handshake, then the member's life; returns its seat if parked.
async fn serve<S: FrameSource, W: FrameSink>(
    source: &mut S,
    sink: &mut W,
    ctx: &ServerContext,
    admission: &mut Admission,
) -> Option<Parked> {
    let (config, shutdown) = (&ctx.config, &ctx.shutdown);
    let first = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, source.next_frame()) => r,
        () = shutdown.cancelled() => return None,
    };
    let answer = match first {
        Err(_) => {
            debug!("handshake timed out");
            Err(vec![goodbye(CloseReason::Timeout, "handshake timed out")])
        }
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => Err(vec![protocol_error(&e.to_string())]),
        Ok(Ok(Some(body))) => {
            let is_hello = body.first() == Some(&kind::HELLO);
            match ClientFrame::decode(body) {
                Ok(ClientFrame::Hello(hello)) => Ok(hello),
                Ok(ClientFrame::ListRooms) => Err(room_list(ctx).await),
                Ok(other) => Err(vec![protocol_error(&format!(
                    "expected HELLO, got {}",
                    other.type_name()
                ))]),
                // A resume token that is not ASCII does not decode: a
                // protocol error like a too long one, not a refusal.
                Err(DecodeError::InvalidUtf8 { field }) if is_hello && field != "resume_token" => {
                    let reason = match field {
                        "room" => RefuseReason::InvalidRoom,
                        "token" => RefuseReason::TokenInvalid,
                        _ => RefuseReason::InvalidName,
                    };
                    ctx.metrics.refused(reason);
                    Err(vec![refusal(
                        reason,
                        &format!("{field} is not valid UTF-8"),
                    )])
                }
                Err(e) => Err(vec![protocol_error(&e.to_string())]),
            }
        }
    };
    admission.handshake_done();
    let hello = match answer {
        Ok(hello) => hello,
        Err(last_words) => {
            // Room lists can be long: their bytes count like any other.
            let bytes = last_words.iter().map(Bytes::len).sum();
            let charge = Charge::data(&ctx.budget, bytes);
            let last_words = match charge {
                Some(_) => last_words,
                None => {
                    ctx.metrics.refused(RefuseReason::Overloaded);
                    vec![refusal(RefuseReason::Overloaded, "server overloaded")]
                }
            };
            send_final(sink, &last_words, config.write_deadline).await;
            return None;
        }
    };

    let outbox = Arc::new(Outbox::new(config.max_pending_bytes, ctx.budget.clone()));
    let (membership, resumed) = match admit(ctx, admission, &hello, outbox.clone()).await {
        Ok(admitted) => admitted,
        Err((reason, text)) => {
            debug!(client = hello.name.as_str(), %reason, "refused");
            ctx.metrics.refused(reason);
            let last_words = [refusal(reason, &text)];
            send_final(sink, &last_words, config.write_deadline).await;
            return None;
        }
    };
    // Fields are recorded as strings: quoted and escaped in text logs,
    // JSON strings in JSON logs, so a name cannot forge a field. (Not
    // `name`: JSON logs give each span a `name` key of its own.)
    let span = tracing::info_span!(
        "member",
        client = membership.name(),
        room = membership.room()
    );
    source.set_max_frame_len(MAX_FRAME_LEN);
    let ended = relay_member(source, sink, ctx, membership, outbox, resumed, span.clone())
        .instrument(span)
        .await;
    match ended {
        Ended::Left => None,
        Ended::Parked(parked) => Some(parked),
        Ended::TakenOver => {
            // No goodbye: the client is (or will be) on its new connection.
            // The end of the stream tells this one, if it still listens.
            let _ = tokio::time::timeout(config.write_deadline, sink.close()).await;
            None
        }
    }
}

/// How a member's connection ended.
enum Ended {
    /// The member left its room (the others were told).
    Left,
    /// Its seat is parked, waiting for a resume.
    Parked(Parked),
    /// Another connection took the seat back: end without a word.
    TakenOver,
}

/// The life of a registered member: relay its frames, write its outbox.
async fn relay_member<S: FrameSource, W: FrameSink>(
    source: &mut S,
    sink: &mut W,
    ctx: &ServerContext,
    membership: Membership,
    outbox: Arc<Outbox>,
    resumed: bool,
    span: tracing::Span,
) -> Ended {
    let (relay, config, shutdown) = (&ctx.relay, &ctx.config, &ctx.shutdown);
    if resumed {
        info!("resumed");
    } else {
        info!("joined");
    }
    let taken_over = || {
        debug!("taken over by a resume");
        Ended::TakenOver
    };
    let writer = write_loop(&outbox, sink, ctx, membership.room_handle());
    tokio::pin!(writer);
    let reason = tokio::select! {
        // Reader first: when the client's goodbye and the reset that follows
        // it are seen in one poll, the reason is the goodbye.
        biased;
        reason = read_loop(source, relay, &membership, &outbox, ctx) => reason,
        reason = &mut writer => reason,
        () = membership.taken_over() => return taken_over(),
        () = shutdown.cancelled() => CloseReason::ServerShutdown,
    };
    let grace = config.resume_grace.min(MAX_RESUME_GRACE);
    let ended = if PARKED_REASONS.contains(&reason) && !grace.is_zero() && relay.park(&membership) {
        info!(%reason, ?grace, "parked");
        Ended::Parked(Parked {
            membership,
            reason,
            until: Instant::now() + grace,
            span,
        })
    } else if relay.leave(membership, reason) {
        info!(%reason, "left");
        Ended::Left
    } else {
        // A resume took the seat while this connection was ending.
        return taken_over();
    };
    // The writer sends what is waiting and then the goodbye, unless it is the
    // one that failed (a dead or stalled socket gets no goodbye).
    if !matches!(
        reason,
        CloseReason::SlowConsumer | CloseReason::ConnectionLost
    ) {
        outbox.close(reason);
        let _ = tokio::time::timeout(config.shutdown_grace, &mut writer).await;
    }
    ended
}

/// Checks a handshake and registers the client under its name's NFC form
/// (see `relais_protocol::normalize_name`), or gives it back its seat, or
/// says why not; `true` with a seat taken back. The join rate and the
/// budget first (cheap, and they bound the work a stranger can cause), then
/// a resume token, then the join token (nobody sees a client join that it
/// does not admit), then version, names and the room. On a cluster node the
/// name is claimed in the whole cluster ([`crate::cluster::Cluster::join`]).
async fn admit(
    ctx: &ServerContext,
    admission: &Admission,
    hello: &Hello,
    outbox: Arc<Outbox>,
) -> Result<(Membership, bool), (RefuseReason, String)> {
    let refused = |reason: RefuseReason| (reason, reason.to_string());
    admission.try_join().map_err(refused)?;
    if ctx.budget.used() > ctx.budget.admission_ceiling() {
        return Err(refused(RefuseReason::Overloaded));
    }
    if let Some(token) = hello.resume.as_deref().filter(|t| !t.is_empty()) {
        if let Some(membership) = resume(ctx, hello, token, outbox.clone())? {
            return Ok((membership, true));
        }
        debug!("resume token for a seat that is gone: joining afresh");
    }
    let grant = auth::check_hello(ctx.auth.as_ref(), hello, auth::unix_now())
        .map_err(|e| (e.refuse_reason(), e.to_string()))?;
    check_version(hello)?;
    let name =
        normalize_name(&hello.name).map_err(|e| (RefuseReason::InvalidName, e.to_string()))?;
    let room = hello_room(hello).map_err(|e| (RefuseReason::InvalidRoom, e.to_string()))?;
    let seat = Seat {
        echo: hello.echo,
        resumable: hello.resume.is_some(),
        read_only: grant.read_only,
    };
    let membership = match ctx.cluster() {
        Some(cluster) => cluster.join(&ctx.relay, &room, &name, seat, outbox).await,
        None => ctx.relay.join(&room, &name, seat, outbox),
    }
    .map_err(refused)?;
    Ok((membership, false))
}

/// Takes back the seat `token` names, if this server issued it for the
/// `HELLO`'s name and room (else `REFUSED` 14) and the seat is still there
/// (else `None`: the client joins afresh). The join token is not checked
/// again: the seat was admitted once, as a member outlives its token.
fn resume(
    ctx: &ServerContext,
    hello: &Hello,
    token: &str,
    outbox: Arc<Outbox>,
) -> Result<Option<Membership>, (RefuseReason, String)> {
    let invalid = || {
        let reason = RefuseReason::ResumeInvalid;
        (reason, reason.to_string())
    };
    // Tokens are issued for registered names, which are valid: a name or
    // room that is not cannot match one.
    let name = normalize_name(&hello.name).map_err(|_| invalid())?;
    let room = hello_room(hello).map_err(|_| invalid())?;
    let id = ctx
        .relay
        .resume_key()
        .verify(token, &room, &name)
        .ok_or_else(invalid)?;
    check_version(hello)?;
    // A token that verifies is the one issued (one encoding per seat): it
    // goes back as it came.
    Ok(ctx
        .relay
        .resume(&room, &name, id, hello.echo, token.to_owned(), outbox))
}

/// The room a `HELLO` names, as registered: NFC, the default room if empty.
fn hello_room(hello: &Hello) -> Result<String, NameError> {
    if hello.room.is_empty() {
        Ok(DEFAULT_ROOM.to_string())
    } else {
        normalize_room(&hello.room)
    }
}

fn check_version(hello: &Hello) -> Result<(), (RefuseReason, String)> {
    if hello.version == VERSION {
        return Ok(());
    }
    Err((
        RefuseReason::UnsupportedVersion,
        format!("this server speaks version {VERSION}"),
    ))
}

/// The newest message a session holds back (over the rate, or while the
/// memory budget is spent), charged to the budget while it is held.
struct Held {
    payload: Bytes,
    _charge: Charge,
}

/// Reads frames from the client until it leaves or misbehaves; returns why.
async fn read_loop<S: FrameSource>(
    source: &mut S,
    relay: &Relay,
    membership: &Membership,
    outbox: &Outbox,
    ctx: &ServerContext,
) -> CloseReason {
    let config = &ctx.config;
    let ping = ServerFrame::Ping.to_bytes();
    let pong = ServerFrame::Pong.to_bytes();
    let mut unanswered_pings = 0u32;
    let now = Instant::now();
    let mut bucket = TokenBucket::new(config.max_message_rate, config.message_burst, now);
    let mut flood = FloodDetector::new(
        u64::from(config.max_message_rate)
            .saturating_mul(u64::from(config.flood_factor))
            .saturating_mul(u64::from(config.flood_seconds.max(1))),
        Duration::from_secs(config.flood_seconds.max(1).into()),
        now,
    );
    // The newest message sent over the rate (or while the memory budget is
    // spent), relayed when a token frees up (and not before `retry_at`).
    let mut held: Option<Held> = None;
    let hold = |payload: Bytes| Held {
        _charge: Charge::force(&ctx.budget, payload.len()),
        payload,
    };
    let mut retry_at = now;
    // One keepalive timer for the whole session, not one per frame: a frame
    // only records when it came; the timer, when it fires, checks whether
    // the client has really been silent for a whole interval.
    let mut last_heard = now;
    let silence = tokio::time::sleep_until(now + config.keepalive_interval);
    tokio::pin!(silence);
    loop {
        let next = sleep_until_some(held.as_ref().map(|_| bucket.next_token_at().max(retry_at)));
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
                let now = Instant::now();
                if bucket.try_take(now) {
                    if let Some(h) = held.take() {
                        if relay.publish(membership, &h.payload).is_err() {
                            held = Some(h);
                            retry_at = now + OVERLOAD_RETRY;
                        }
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
            Ok(ClientFrame::Data(_)) if membership.read_only() => {
                debug!("a read-only member sent data");
                return CloseReason::ReadOnly;
            }
            Ok(ClientFrame::Data(payload)) => {
                ctx.metrics.message_received(payload.len() + 1);
                if flood.record(now) {
                    return CloseReason::RateLimit;
                }
                if held.is_none() && bucket.try_take(now) {
                    if relay.publish(membership, &payload).is_err() {
                        held = Some(hold(payload));
                        retry_at = now + OVERLOAD_RETRY;
                    }
                } else {
                    if held.is_some() {
                        ctx.metrics.rate_limited();
                    }
                    held = Some(hold(payload));
                }
            }
            Ok(ClientFrame::Ping) => outbox.push_message(PONG_SLOT, pong.clone()),
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Goodbye(..)) => {
                // A client's last word is relayed even if it was over the rate.
                // (Unless the memory budget is spent: then it is lost.)
                if let Some(h) = held.take() {
                    let _ = relay.publish(membership, &h.payload);
                }
                return CloseReason::Normal;
            }
            Ok(ClientFrame::Hello(_) | ClientFrame::ListRooms) => {
                // Not the frame itself: a HELLO may carry a token.
                debug!("handshake frame after the handshake");
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
async fn write_loop<W: FrameSink>(
    outbox: &Outbox,
    sink: &mut W,
    ctx: &ServerContext,
    room: RoomHandle,
) -> CloseReason {
    let (config, relay) = (&ctx.config, &ctx.relay);
    let mut batch = Batch::default();
    // Dropped on every way out: what it counted is added then.
    let mut tally = ctx.metrics.writer();
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
        // The snapshot is pulled a chunk at a time, as the connection
        // takes it (paced like everything else).
        let mut snapshot_stalled = false;
        if outbox.owes_snapshot() {
            snapshot_stalled = relay.fill_snapshot(&room, outbox, SNAPSHOT_CHUNK);
        }
        let closed = outbox.drain(&mut batch);
        if closed == Some(CloseReason::SlowConsumer) {
            return CloseReason::SlowConsumer;
        }
        if !batch.is_empty() {
            let bytes = batch.frames.iter().map(Bytes::len).sum();
            pacer.written(bytes);
            match tokio::time::timeout(config.write_deadline, sink.send_batch(&batch.frames)).await
            {
                Err(_) => return CloseReason::SlowConsumer,
                Ok(Err(e)) => {
                    debug!(error = %e, "write failed");
                    return CloseReason::ConnectionLost;
                }
                Ok(Ok(())) => {
                    outbox.written();
                    let now = Instant::now();
                    tally.batch_written(&batch.stamps, bytes, now);
                    batching.wrote(now, batch.frames.len());
                    batch.clear();
                }
            }
        }
        if let Some(reason) = closed {
            // The goodbye is best effort: the connection ends either way.
            send_final(sink, &[goodbye(reason, "")], config.write_deadline).await;
            return reason;
        }
        if outbox.owes_snapshot() && !snapshot_stalled {
            continue; // The next chunk, once the connection takes it.
        }
        let flush_due = tally.due();
        tokio::select! {
            () = outbox.wait() => {}
            () = tokio::time::sleep(OVERLOAD_RETRY), if snapshot_stalled => {}
            // What an idle writer counted still shows within FLUSH_EVERY.
            () = sleep_until_some(flush_due), if flush_due.is_some() => tally.flush(),
        }
    }
}

/// Sleeps until `at`, or forever if there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// The answer to `LIST_ROOMS`: the rooms and their member counts (the
/// whole cluster's on a cluster node) in as many `ROOM_LIST` frames as
/// needed.
async fn room_list(ctx: &ServerContext) -> Vec<Bytes> {
    /// Rooms per frame: 900 entries of at most 69 bytes fit in a frame.
    const PER_FRAME: usize = 900;
    let rooms = match ctx.cluster() {
        Some(cluster) => cluster.rooms(&ctx.relay).await,
        None => ctx.relay.rooms(),
    };
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
