//! The client state machine: [`Core`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use relais_protocol::frames::encode_data;
use relais_protocol::{
    normalize_name, normalize_room, ClientFrame, CloseReason, FrameDecoder, Hello, RefuseReason,
    RoomInfo, ServerFrame, Welcome, MAX_FRAME_LEN, MAX_PAYLOAD, MAX_TOKEN_LEN, VERSION,
};

use crate::backoff::Backoff;
use crate::error::{ConnectError, Disconnect, SendError};
use crate::event::{Event, Message};

/// The reason given in [`Event::Left`] for a member that left while this
/// client was reconnecting: the new `WELCOME` no longer lists it, and why it
/// left was said to a connection that was gone.
pub const UNKNOWN_REASON: CloseReason = CloseReason::Unknown(255);

/// Silent keepalive intervals after which the server is declared gone: the
/// first two each send a `PING`, the third gives up.
const SILENT_INTERVALS_LIMIT: u32 = 3;

/// A connection that stayed up this long was a working link: after it,
/// reconnecting starts again from the first backoff delay and a fresh
/// window. One that drops sooner (a server that accepts and then fails
/// straight away) keeps backing off.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// Stands for "never" where a duration is too long to add to an instant.
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + d`, or as good as never if that is past what an instant holds
/// (`Duration::MAX` is a natural way to say "no limit").
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + FOREVER)
}

/// A read buffer that grew past this (a burst of large frames) is freed once
/// drained rather than kept for the life of the connection.
const BUFFER_RETAIN_LIMIT: usize = 1024 * 1024;

/// How a client connects, and reconnects.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// The name to register (put in NFC by [`Core::new`]).
    pub name: String,
    /// The room to join; empty for the server's default room.
    pub room: String,
    /// Whether to receive one's own messages.
    pub echo: bool,
    /// A join token, for servers that require one.
    pub token: Option<String>,
    /// Time for each attempt: transport, TLS and handshake together.
    pub connect_timeout: Duration,
    /// Silence after which the client pings the server; after three silent
    /// intervals the connection counts as lost. Zero turns keepalive off.
    pub keepalive: Duration,
    /// Payloads queued at most; past it the oldest is dropped.
    pub outbound_capacity: usize,
    /// How long to keep trying to reconnect after a lost connection; zero
    /// never reconnects.
    pub reconnect_window: Duration,
    /// The first delay between reconnect attempts (see [`Backoff`]).
    pub backoff_initial: Duration,
    /// The longest delay between reconnect attempts.
    pub backoff_max: Duration,
    /// Seed of the backoff's jitter.
    pub seed: u64,
    /// Time [`Core::close`] gives queued payloads and the goodbyes.
    pub close_timeout: Duration,
}

/// A credential in `Debug` output: `<N bytes>`, never the bytes.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("name", &self.name)
            .field("room", &self.room)
            .field("echo", &self.echo)
            // A bearer credential: its length only.
            .field("token", &self.token.as_ref().map(|t| Redacted(t.len())))
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("outbound_capacity", &self.outbound_capacity)
            .field("reconnect_window", &self.reconnect_window)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("close_timeout", &self.close_timeout)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The defaults, for `name` in the default room: echo on, 5 s to
    /// connect, a 10 s keepalive, 1,024 queued payloads, reconnecting for
    /// 60 s with delays from 100 ms to 5 s, 2 s to close.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            room: String::new(),
            echo: true,
            token: None,
            connect_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(10),
            outbound_capacity: 1024,
            reconnect_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            seed: 0x5eed,
            close_timeout: Duration::from_secs(2),
        }
    }
}

/// Where the client stands, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The first connection is being made.
    Connecting,
    /// Joined: sends go out, messages come in.
    Connected,
    /// The connection was lost; the client is getting it back. Sends are
    /// queued meanwhile.
    Reconnecting,
    /// Closed for good: see [`Core::status`].
    Closed,
}

/// What the driver must do with its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a transport (TCP, TLS, WebSocket) to the server by `deadline`,
    /// then call [`Core::connected`] or [`Core::connect_failed`].
    Connect {
        /// When the attempt times out (the core also times it out).
        deadline: Instant,
    },
    /// Close the transport; nothing more will be read from it.
    Disconnect,
}

/// Something the driver hands to the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Update {
    /// Joined for the first time: the room's name, as the server gave it.
    Joined {
        /// The room joined (the default room's real name if none was asked).
        room: String,
    },
    /// Something happened in the room.
    Event(Event),
    /// The first connection failed; the core is closed.
    Failed(ConnectError),
    /// The client is closed for good (also after a close request).
    Closed(Disconnect),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to open a transport at `at`.
    Waiting { at: Instant },
    /// The driver is opening a transport.
    Opening { deadline: Instant },
    /// `HELLO` queued or sent; waiting for the answer.
    Handshake { deadline: Instant },
    /// Joined.
    Joined,
    /// Closing: payloads and `GOODBYE` go out, then the server's goodbye.
    Closing { deadline: Instant },
    /// Done; the driver can stop.
    Closed,
}

/// One client, across as many connections as reconnecting takes. See the
/// crate docs for how a driver uses it.
#[derive(Debug)]
pub struct Core {
    options: Options,
    phase: Phase,
    /// Whether a `WELCOME` ever came: before it, failures are the
    /// connect call's errors; after it, they are reconnected.
    ever_joined: bool,
    /// The end of the current reconnect window.
    window_end: Option<Instant>,
    backoff: Backoff,
    /// The seat's token once the server issued one; empty asks for one.
    resume_token: String,
    // The current connection.
    decoder: FrameDecoder,
    inbuf: BytesMut,
    hello_due: bool,
    ping_due: bool,
    pong_due: bool,
    goodbye_due: bool,
    last_input: Instant,
    silent_intervals: u32,
    /// When the current connection's `WELCOME` came.
    joined_at: Instant,
    // The session.
    room: String,
    members: Vec<String>,
    max_payload: usize,
    outbound: VecDeque<Bytes>,
    updates: VecDeque<Update>,
    action: Option<Action>,
    status: Option<Disconnect>,
    sent: u64,
    dropped_outbound: u64,
}

impl Core {
    /// A client that will connect as `options` says. Checks the name, room
    /// and token first (nothing is sent if they are wrong); the first
    /// [`poll_action`](Self::poll_action) then asks for a transport.
    pub fn new(mut options: Options, now: Instant) -> Result<Self, ConnectError> {
        options.name = normalize_name(&options.name).map_err(ConnectError::InvalidName)?;
        if !options.room.is_empty() {
            options.room = normalize_room(&options.room).map_err(ConnectError::InvalidRoom)?;
        }
        if let Some(token) = &options.token {
            if token.len() > MAX_TOKEN_LEN {
                return Err(ConnectError::TokenTooLong {
                    len: token.len(),
                    max: MAX_TOKEN_LEN,
                });
            }
            if !token.is_ascii() {
                return Err(ConnectError::TokenNotAscii);
            }
        }
        let backoff = Backoff::new(options.backoff_initial, options.backoff_max, options.seed);
        Ok(Self {
            phase: Phase::Waiting { at: now },
            ever_joined: false,
            window_end: None,
            backoff,
            resume_token: String::new(),
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
            inbuf: BytesMut::new(),
            hello_due: false,
            ping_due: false,
            pong_due: false,
            goodbye_due: false,
            last_input: now,
            silent_intervals: 0,
            joined_at: now,
            room: String::new(),
            members: Vec::new(),
            max_payload: MAX_PAYLOAD,
            outbound: VecDeque::new(),
            updates: VecDeque::new(),
            action: None,
            status: None,
            sent: 0,
            dropped_outbound: 0,
            options,
        })
    }

    // ---- what the application sees ----

    /// The registered name (NFC).
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The room joined, as the server named it (empty before the first
    /// `WELCOME`).
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The room's members, this client included, as of the last frame read.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The largest payload [`send`](Self::send) accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Where the client stands.
    pub fn state(&self) -> State {
        // Closing and closed always come with a status.
        match self.phase {
            _ if self.status.is_some() => State::Closed,
            Phase::Joined => State::Connected,
            _ if self.ever_joined => State::Reconnecting,
            _ => State::Connecting,
        }
    }

    /// Why the client closed, or `None` while it is connected or
    /// reconnecting.
    pub fn status(&self) -> Option<&Disconnect> {
        self.status.as_ref()
    }

    /// Whether the driver is done: closed, and the transport released.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Closed && self.action.is_none()
    }

    /// Payloads written so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Payloads dropped from the full outbound queue, oldest first.
    pub fn dropped_outbound(&self) -> u64 {
        self.dropped_outbound
    }

    /// Whether payloads are waiting to be written.
    pub fn has_queued(&self) -> bool {
        !self.outbound.is_empty()
    }

    /// Queues `payload` for the room; while reconnecting it waits for the
    /// new connection. A full queue drops its oldest payload.
    pub fn send(&mut self, payload: Bytes) -> Result<(), SendError> {
        if let Some(reason) = &self.status {
            return Err(SendError::Closed(reason.clone()));
        }
        if payload.len() > self.max_payload {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        if self.outbound.len() >= self.options.outbound_capacity.max(1) {
            self.outbound.pop_front();
            self.dropped_outbound += 1;
        }
        self.outbound.push_back(payload);
        Ok(())
    }

    /// Closes: when joined, the queued payloads and a `GOODBYE` go out and
    /// the server's goodbye is awaited (at most `close_timeout`); otherwise
    /// at once. The status becomes [`Disconnect::Closed`] unless the client
    /// had already closed.
    pub fn close(&mut self, now: Instant) {
        self.set_status(Disconnect::Closed);
        match self.phase {
            Phase::Joined => {
                self.goodbye_due = true;
                self.phase = Phase::Closing {
                    deadline: later(now, self.options.close_timeout),
                };
            }
            Phase::Closing { .. } | Phase::Closed => {}
            _ => self.finish(),
        }
    }

    /// The next thing to tell the application.
    pub fn poll_event(&mut self) -> Option<Update> {
        self.updates.pop_front()
    }

    /// What to do with the transport, if anything.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.action.take()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout)
    /// must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { at } => Some(at),
            Phase::Opening { deadline }
            | Phase::Handshake { deadline }
            | Phase::Closing { deadline } => Some(deadline),
            Phase::Joined => self.keepalive_deadline(),
            Phase::Closed => None,
        }
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        let k = self.options.keepalive;
        (!k.is_zero()).then(|| {
            let wait = k.checked_mul(self.silent_intervals + 1).unwrap_or(FOREVER);
            later(self.last_input, wait)
        })
    }

    /// Acts on the time: starts an attempt, times one out, pings, declares
    /// a silent server gone, or ends a close that took too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Waiting { at } if now >= at => {
                let deadline = later(now, self.options.connect_timeout);
                self.phase = Phase::Opening { deadline };
                self.action = Some(Action::Connect { deadline });
            }
            Phase::Opening { deadline } | Phase::Handshake { deadline } if now >= deadline => {
                self.attempt_failed(ConnectError::Timeout, now);
            }
            Phase::Joined => {
                while self.keepalive_deadline().is_some_and(|at| now >= at) {
                    self.silent_intervals += 1;
                    if self.silent_intervals >= SILENT_INTERVALS_LIMIT {
                        return self.connection_lost(Disconnect::Timeout, now);
                    }
                    self.ping_due = true;
                }
            }
            Phase::Closing { deadline } if now >= deadline => self.finish(),
            _ => {}
        }
    }

    // ---- the transport ----

    /// The transport asked for is open: the `HELLO` is queued.
    pub fn connected(&mut self, now: Instant) {
        let Phase::Opening { deadline } = self.phase else {
            return;
        };
        self.phase = Phase::Handshake { deadline };
        self.decoder = FrameDecoder::new(MAX_FRAME_LEN);
        self.inbuf = BytesMut::new();
        self.hello_due = true;
        self.ping_due = false;
        self.pong_due = false;
        self.last_input = now;
        self.silent_intervals = 0;
    }

    /// The transport asked for could not be opened.
    pub fn connect_failed(&mut self, error: ConnectError, now: Instant) {
        if matches!(self.phase, Phase::Opening { .. }) {
            self.attempt_failed(error, now);
        }
    }

    /// Reading or writing the transport failed.
    pub fn io_failed(&mut self, error: std::io::Error, now: Instant) {
        match self.phase {
            Phase::Opening { .. } | Phase::Handshake { .. } => {
                let error = match error.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        ConnectError::Timeout
                    }
                    _ => ConnectError::Io(error),
                };
                self.attempt_failed(error, now);
            }
            Phase::Joined => {
                self.connection_lost(Disconnect::ConnectionLost(error.to_string()), now)
            }
            Phase::Closing { .. } => self.finish(),
            Phase::Waiting { .. } | Phase::Closed => {}
        }
    }

    /// Bytes read from the transport.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if !matches!(
            self.phase,
            Phase::Handshake { .. } | Phase::Joined | Phase::Closing { .. }
        ) {
            return;
        }
        self.last_input = now;
        self.silent_intervals = 0;
        self.inbuf.extend_from_slice(data);
        loop {
            let body = match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    let text = e.to_string();
                    self.broken(text, now);
                    break;
                }
            };
            if !self.dispatch(body, now) {
                break;
            }
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > BUFFER_RETAIN_LIMIT {
            self.inbuf = BytesMut::new();
        }
    }

    /// The transport reached end of stream.
    pub fn handle_eof(&mut self, now: Instant) {
        match self.phase {
            Phase::Handshake { .. } => {
                let error = speaks_tls(&self.inbuf).unwrap_or(ConnectError::Closed);
                self.attempt_failed(error, now);
            }
            Phase::Joined => {
                let why = match self.decoder.decode_eof(&self.inbuf) {
                    Ok(()) => "the server closed the connection without a goodbye".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.connection_lost(Disconnect::ConnectionLost(why), now);
            }
            Phase::Closing { .. } => self.finish(),
            _ => {}
        }
    }

    /// Appends the frames due to `out` (nothing before the transport is up;
    /// only the `HELLO` before the `WELCOME`). Returns how many payloads
    /// went in.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> usize {
        match self.phase {
            Phase::Handshake { .. } if self.hello_due => {
                self.hello_due = false;
                ClientFrame::Hello(Hello {
                    version: VERSION,
                    name: self.options.name.clone(),
                    room: self.options.room.clone(),
                    echo: self.options.echo,
                    token: self.options.token.clone(),
                    resume: Some(self.resume_token.clone()),
                })
                .encode(out);
                0
            }
            Phase::Joined | Phase::Closing { .. } => {
                if std::mem::take(&mut self.pong_due) {
                    ClientFrame::Pong.encode(out);
                }
                if std::mem::take(&mut self.ping_due) {
                    ClientFrame::Ping.encode(out);
                }
                let n = self.outbound.len();
                for payload in self.outbound.drain(..) {
                    encode_data(&payload, out);
                }
                self.sent += n as u64;
                if std::mem::take(&mut self.goodbye_due) {
                    ClientFrame::Goodbye(CloseReason::Normal, String::new()).encode(out);
                }
                n
            }
            _ => 0,
        }
    }

    // ---- inside ----

    /// Acts on one frame; `false` if the connection ended.
    fn dispatch(&mut self, body: Bytes, now: Instant) -> bool {
        let frame = match ServerFrame::decode(body) {
            Ok(frame) => frame,
            Err(e) => {
                self.broken(e.to_string(), now);
                return false;
            }
        };
        if let Phase::Handshake { .. } = self.phase {
            match frame {
                ServerFrame::Welcome(w) if w.version == VERSION => self.welcome(w, now),
                ServerFrame::Welcome(w) => {
                    self.attempt_failed(
                        ConnectError::Protocol(format!(
                            "server speaks protocol version {}, this client {VERSION}",
                            w.version
                        )),
                        now,
                    );
                    return false;
                }
                ServerFrame::Refused(reason, message) => {
                    self.attempt_failed(ConnectError::Refused { reason, message }, now);
                    return false;
                }
                ServerFrame::Goodbye(..) => {
                    self.attempt_failed(ConnectError::Closed, now);
                    return false;
                }
                other => {
                    self.attempt_failed(
                        ConnectError::Protocol(format!(
                            "expected WELCOME or REFUSED, got {}",
                            other.type_name()
                        )),
                        now,
                    );
                    return false;
                }
            }
            return true;
        }
        match frame {
            ServerFrame::Message { sender, payload } => {
                // A copy: a slice would keep the whole read buffer alive for
                // as long as the message waits in the receive queue.
                let payload = Bytes::copy_from_slice(&payload);
                self.event(Event::Message(Message { sender, payload }));
            }
            ServerFrame::Joined(name) => {
                if !self.members.contains(&name) {
                    self.members.push(name.clone());
                }
                self.event(Event::Joined(name));
            }
            ServerFrame::Left(name, reason) => {
                self.members.retain(|m| *m != name);
                self.event(Event::Left { name, reason });
            }
            ServerFrame::Ping => self.pong_due = true,
            ServerFrame::Pong => {}
            ServerFrame::Goodbye(reason, message) => {
                if let Phase::Closing { .. } = self.phase {
                    self.finish();
                } else {
                    self.connection_lost(Disconnect::Goodbye { reason, message }, now);
                }
                return false;
            }
            other => {
                let text = format!("unexpected {} frame after the handshake", other.type_name());
                self.broken(text, now);
                return false;
            }
        }
        true
    }

    /// The server's bytes make no sense.
    fn broken(&mut self, text: String, now: Instant) {
        match self.phase {
            Phase::Handshake { .. } => {
                let error = speaks_tls(&self.inbuf).unwrap_or(ConnectError::Protocol(text));
                self.attempt_failed(error, now);
            }
            Phase::Joined => self.connection_lost(Disconnect::Protocol(text), now),
            _ => self.finish(),
        }
    }

    fn welcome(&mut self, w: Welcome, now: Instant) {
        self.phase = Phase::Joined;
        self.max_payload = MAX_PAYLOAD.min(w.max_payload as usize);
        if let Some(resume) = &w.resume {
            self.resume_token.clone_from(&resume.token);
        }
        self.joined_at = now;
        self.room = w.room;
        if !self.ever_joined {
            self.ever_joined = true;
            self.members = w.members;
            let room = self.room.clone();
            self.updates.push_back(Update::Joined { room });
            return;
        }
        let resumed = w.resume.is_some_and(|r| r.resumed);
        let old = std::mem::replace(&mut self.members, w.members);
        let me = &self.options.name;
        for name in old.iter().filter(|n| *n != me && !self.members.contains(n)) {
            self.updates.push_back(Update::Event(Event::Left {
                name: name.clone(),
                reason: UNKNOWN_REASON,
            }));
        }
        for name in self.members.iter().filter(|n| *n != me && !old.contains(n)) {
            self.updates
                .push_back(Update::Event(Event::Joined(name.clone())));
        }
        self.event(Event::Reconnected { resumed });
    }

    fn event(&mut self, event: Event) {
        self.updates.push_back(Update::Event(event));
    }

    /// An attempt (before its `WELCOME`) failed.
    fn attempt_failed(&mut self, error: ConnectError, now: Instant) {
        self.release_transport();
        if !self.ever_joined {
            self.phase = Phase::Closed;
            let why = Disconnect::ConnectionLost(error.to_string());
            self.status.get_or_insert(why);
            self.updates.push_back(Update::Failed(error));
            return;
        }
        let why = match error {
            ConnectError::Refused {
                reason: RefuseReason::ResumeInvalid,
                ..
            } if !self.resume_token.is_empty() => {
                // The server does not know the seat (it restarted, say):
                // join afresh, at once. (Refused 14 with no token to blame
                // is a broken server: that one backs off like the rest.)
                self.resume_token.clear();
                self.phase = Phase::Waiting { at: now };
                return;
            }
            ConnectError::Refused { reason, message } => {
                let why = Disconnect::Refused { reason, message };
                if !retry_refusal(reason) {
                    return self.close_for_good(why);
                }
                why
            }
            other => Disconnect::ConnectionLost(other.to_string()),
        };
        self.retry(why, now);
    }

    /// A joined connection ended.
    fn connection_lost(&mut self, why: Disconnect, now: Instant) {
        self.release_transport();
        if now.saturating_duration_since(self.joined_at) >= STABLE_LINK {
            self.backoff.reset();
            self.window_end = None;
        }
        self.hello_due = false;
        self.goodbye_due = false;
        let retry = match &why {
            Disconnect::ConnectionLost(_) | Disconnect::Timeout => true,
            Disconnect::Goodbye { reason, .. } => matches!(
                reason,
                CloseReason::ServerShutdown | CloseReason::Timeout | CloseReason::SlowConsumer
            ),
            _ => false,
        };
        if retry && !self.options.reconnect_window.is_zero() {
            self.event(Event::Reconnecting(why.clone()));
            self.retry(why, now);
        } else {
            self.close_for_good(why);
        }
    }

    /// Schedules the next attempt, unless the reconnect window has passed.
    /// The last attempt is made at the window's end, however short it is.
    fn retry(&mut self, why: Disconnect, now: Instant) {
        let end = *self
            .window_end
            .get_or_insert(later(now, self.options.reconnect_window));
        if now >= end {
            return self.close_for_good(why);
        }
        let at = later(now, self.backoff.next_delay()).min(end);
        self.phase = Phase::Waiting { at };
    }

    fn close_for_good(&mut self, why: Disconnect) {
        self.set_status(why);
        self.finish();
    }

    /// Records why the client closed, unless it already had; the first
    /// reason wins.
    fn set_status(&mut self, why: Disconnect) {
        if self.status.is_none() {
            self.status = Some(why.clone());
            self.updates.push_back(Update::Closed(why));
        }
    }

    /// Ends everything: the transport goes, the status is set.
    fn finish(&mut self) {
        self.release_transport();
        self.phase = Phase::Closed;
        self.set_status(Disconnect::Closed);
    }

    /// Asks the driver to drop the transport, if the phase has one (callers
    /// release before they leave the phase).
    fn release_transport(&mut self) {
        if matches!(
            self.phase,
            Phase::Opening { .. } | Phase::Handshake { .. } | Phase::Joined | Phase::Closing { .. }
        ) {
            self.action = Some(Action::Disconnect);
        }
    }
}

/// Whether a refusal met while reconnecting may pass by itself: a full
/// server or room, the memory budget, the address limits, a cluster node
/// cut off from its backplane, and "name taken" (a server that cannot
/// resume still holds the lost connection's ghost for a while).
fn retry_refusal(reason: RefuseReason) -> bool {
    matches!(
        reason,
        RefuseReason::NameTaken
            | RefuseReason::ResumeInvalid
            | RefuseReason::ServerFull
            | RefuseReason::RoomFull
            | RefuseReason::Overloaded
            | RefuseReason::TooManyConnections
            | RefuseReason::TooManyJoins
            | RefuseReason::ClusterUnavailable
    )
}

/// A server that answered in TLS (an alert: `15 03 ...`): the port expects
/// TLS.
fn speaks_tls(buf: &[u8]) -> Option<ConnectError> {
    buf.starts_with(&[21, 3]).then(|| {
        ConnectError::Protocol(
            "the server answered with TLS: it expects TLS on this port \
             (ClientBuilder::tls, or --tls on the command line)"
                .into(),
        )
    })
}

/// The one-shot room listing, without I/O: write [`RoomLister::request`],
/// feed what comes back.
#[derive(Debug, Default)]
pub struct RoomLister {
    decoder: Option<FrameDecoder>,
    buf: BytesMut,
    rooms: Vec<RoomInfo>,
}

impl RoomLister {
    /// A listing about to start.
    pub fn new() -> Self {
        Self::default()
    }

    /// The request to write: a `LIST_ROOMS` frame.
    pub fn request() -> Bytes {
        ClientFrame::ListRooms.to_bytes()
    }

    /// Feeds bytes read; `Some` once the listing is complete.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<Option<Vec<RoomInfo>>, ConnectError> {
        self.buf.extend_from_slice(data);
        let decoder = self
            .decoder
            .get_or_insert_with(|| FrameDecoder::new(MAX_FRAME_LEN));
        while let Some(body) = decoder
            .decode(&mut self.buf)
            .map_err(|e| speaks_tls(&self.buf).unwrap_or(ConnectError::Protocol(e.to_string())))?
        {
            match ServerFrame::decode(body).map_err(|e| ConnectError::Protocol(e.to_string()))? {
                ServerFrame::RoomList { rooms, more } => {
                    self.rooms.extend(rooms);
                    if !more {
                        return Ok(Some(std::mem::take(&mut self.rooms)));
                    }
                }
                ServerFrame::Refused(reason, message) => {
                    return Err(ConnectError::Refused { reason, message })
                }
                other => {
                    return Err(ConnectError::Protocol(format!(
                        "expected ROOM_LIST, got {}",
                        other.type_name()
                    )))
                }
            }
        }
        Ok(None)
    }

    /// End of stream before the last `ROOM_LIST`.
    pub fn handle_eof(&self) -> ConnectError {
        speaks_tls(&self.buf).unwrap_or(ConnectError::Closed)
    }
}
