//! Connection options and the synchronous handshake.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use relais_protocol::{
    normalize_name, normalize_room, ClientFrame, FrameDecoder, Hello, RoomInfo, ServerFrame,
    Welcome, MAX_FRAME_LEN, MAX_PAYLOAD, MAX_TOKEN_LEN, VERSION,
};

use crate::addr::ServerAddr;
use crate::client::Client;
use crate::error::{ConnectError, Disconnect};
use crate::shared::Shared;
use crate::tls::{self, TlsOptions};
use crate::transport::Transport;
use crate::worker::{self, frame_name, READ_CHUNK};

/// Default for [`ClientBuilder::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`ClientBuilder::keepalive`].
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// Default for [`ClientBuilder::inbound_capacity`].
const DEFAULT_INBOUND_CAPACITY: usize = 4096;
/// Default for [`ClientBuilder::outbound_capacity`].
const DEFAULT_OUTBOUND_CAPACITY: usize = 1024;

/// What the receive queue keeps when messages arrive faster than the user
/// takes them; chosen with [`ClientBuilder::receive_mode`].
///
/// Either way the queue holds at most
/// [`inbound_capacity`](ClientBuilder::inbound_capacity) events,
/// [`Client::members`] stays current whatever is dropped, and
/// [`Stats::received`](crate::Stats::received) counts every message that
/// arrived.
///
/// **For game state, use [`LatestPerSender`](Self::LatestPerSender)**: a
/// game loop that hitches for two seconds then reads each player's current
/// state, not two seconds of history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReceiveMode {
    /// Every event, oldest first (the default).
    ///
    /// Kept: every message and presence event, in arrival order. Dropped:
    /// when the queue is full, the **oldest** event of any kind, counted in
    /// [`Stats::dropped_inbound`](crate::Stats::dropped_inbound). Nothing is
    /// conflated. For chat, logs, commands: streams where each message
    /// counts.
    #[default]
    Queue,
    /// At most one waiting message per sender: the newest.
    ///
    /// Kept: for each sender, only its newest message. A newer message from
    /// a sender replaces the one of theirs still waiting **in its place in
    /// the queue**, so per-sender order holds, nothing is duplicated, and
    /// each replacement is counted in
    /// [`Stats::recv_conflated`](crate::Stats::recv_conflated) (not as a
    /// drop).
    ///
    /// Presence events (`Joined`, `Left`) are never replaced or merged, and
    /// keep their order relative to messages: a presence event about `X`
    /// ends `X`'s slot, so `X`'s message queued before it is taken before it,
    /// and `X`'s next message queues after it. Taking a message frees its
    /// sender's slot too: the next one queues at the back.
    ///
    /// The queue therefore holds about one message per member (a room has at
    /// most 1,000) plus the presence events not yet taken. If it still
    /// reaches its capacity (more presence events waiting than the capacity
    /// leaves room for: over 3,000 with the default 4096), the **oldest
    /// message** is dropped to make room, and only when nothing but presence
    /// events wait is the oldest presence event dropped; both count in
    /// [`Stats::dropped_inbound`](crate::Stats::dropped_inbound).
    ///
    /// [`Client::recv`] takes the oldest waiting message (passing over, and
    /// discarding, the presence events before it, as in every mode);
    /// [`Client::recv_event`] takes every event in order.
    LatestPerSender,
}

/// Options for a connection; [`connect`](Self::connect) opens it.
///
/// ```no_run
/// use std::time::Duration;
/// use relais::ReceiveMode;
///
/// let client = relais::Client::builder("alice")
///     .room("arena-7")
///     .echo(false)
///     .receive_mode(ReceiveMode::LatestPerSender) // game state: newest per player
///     .connect_timeout(Duration::from_secs(2))
///     .connect("127.0.0.1:7777")?;
/// # Ok::<(), relais::ConnectError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct ClientBuilder {
    name: String,
    room: String,
    echo: bool,
    connect_timeout: Duration,
    tls: Option<TlsOptions>,
    keepalive: Duration,
    receive_mode: ReceiveMode,
    inbound_capacity: usize,
    outbound_capacity: usize,
    token: Option<Token>,
}

/// A join token, left out of `Debug` output (it is a credential).
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl ClientBuilder {
    /// Options for a client registering as `name`, with every default.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            room: String::new(),
            echo: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
            keepalive: DEFAULT_KEEPALIVE,
            receive_mode: ReceiveMode::Queue,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            outbound_capacity: DEFAULT_OUTBOUND_CAPACITY,
            token: None,
        }
    }

    /// The room to join. Empty (the default) joins the server's default room,
    /// [`DEFAULT_ROOM`](crate::DEFAULT_ROOM); [`Client::room`] tells which.
    pub fn room(mut self, room: &str) -> Self {
        self.room = room.to_owned();
        self
    }

    /// The join token to present, for servers that require one (minted by
    /// the game's backend for this name and room; see PROTOCOL.md, "Join
    /// tokens"). A server without a token key ignores it. At most
    /// [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN) bytes of ASCII, checked by
    /// [`connect`](Self::connect) before connecting.
    ///
    /// ```no_run
    /// let token = std::fs::read_to_string("alice.jwt")?;
    /// let client = relais::Client::builder("alice")
    ///     .room("arena")
    ///     .token(token.trim())
    ///     .connect("127.0.0.1:7777")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The builder's `Debug` output shows the token's length, not the token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token(token.into()));
        self
    }

    /// Whether this client receives its own messages back (default `true`;
    /// the echo is how a client measures its round trip).
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// How long the TCP connection plus the handshake may take (default 5 s).
    /// Name resolution is not covered: it is done by the system resolver,
    /// which has no timeout to give it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects with TLS (default: plaintext), verifying the server's
    /// certificate as `options` say: against the system's trusted roots or
    /// a given CA, for the host of the address or an explicit name. The TLS
    /// handshake counts in the [connect timeout](Self::connect_timeout); a
    /// certificate that does not verify is [`ConnectError::Tls`].
    ///
    /// ```no_run
    /// let client = relais::Client::builder("alice")
    ///     .tls(relais::TlsOptions::new().ca_file("ca.pem"))
    ///     .connect("relais.example.org:7777")?;
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// The keepalive interval (default 10 s). After an interval with nothing
    /// from the server the client sends a `PING`; after three silent
    /// intervals in a row it gives up with [`Disconnect::Timeout`].
    /// [`Duration::ZERO`] turns keepalive off.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self
    }

    /// What the receive queue keeps when the user reads slower than
    /// messages arrive (see [`ReceiveMode`]).
    ///
    /// **For game state, choose [`ReceiveMode::LatestPerSender`]**: at most
    /// one message waits per sender, its newest, so a loop that stalls reads
    /// everyone's current state when it resumes, and presence events are
    /// still all there, in order.
    ///
    /// The default is [`ReceiveMode::Queue`], which loses nothing below the
    /// capacity: it is what chat-like uses need (every line counts), it keeps
    /// existing programs' behaviour, and a loop that drains the queue every
    /// frame sees nearly the same in both modes (the server itself already
    /// keeps only the newest message per sender for a recipient that falls
    /// behind on the network); the difference shows when the reader stalls.
    ///
    /// ```no_run
    /// use relais::{Client, Event, ReceiveMode};
    ///
    /// let client = Client::builder("alice")
    ///     .receive_mode(ReceiveMode::LatestPerSender)
    ///     .connect("127.0.0.1:7777")?;
    /// // After a stall: each player's newest state, and every join and leave.
    /// while let Some(event) = client.recv_event() {
    ///     match event {
    ///         Event::Message(m) => println!("{} is at {:?}", m.sender, m.payload),
    ///         Event::Joined(name) => println!("{name} joined"),
    ///         Event::Left { name, .. } => println!("{name} left"),
    ///         _ => {}
    ///     }
    /// }
    /// println!("{} stale states skipped", client.stats().recv_conflated);
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn receive_mode(mut self, mode: ReceiveMode) -> Self {
        self.receive_mode = mode;
        self
    }

    /// Most received events held until the user takes them (default 4096,
    /// at least 1). When full, an event is dropped and counted in
    /// [`Stats::dropped_inbound`](crate::Stats::dropped_inbound): the
    /// **oldest** one in [`ReceiveMode::Queue`], the oldest *message* in
    /// [`ReceiveMode::LatestPerSender`] (see there).
    pub fn inbound_capacity(mut self, capacity: usize) -> Self {
        self.inbound_capacity = capacity;
        self
    }

    /// Most payloads queued by [`Client::send`] and not yet written (default
    /// 1024, at least 1). When full, the **oldest** queued payload is dropped
    /// and counted in [`Stats::dropped_outbound`](crate::Stats::dropped_outbound):
    /// in a real-time relay the newest state matters most.
    pub fn outbound_capacity(mut self, capacity: usize) -> Self {
        self.outbound_capacity = capacity;
        self
    }

    /// Checks the names, connects, performs the handshake, and starts the
    /// background threads. Blocks until the server has answered, or the
    /// connect timeout has passed.
    ///
    /// The name and room are checked against the naming rule
    /// ([`normalize_name`](relais_protocol::normalize_name)) and sent in the
    /// NFC form the server registers, so [`Client::name`] is the name the
    /// other members see.
    pub fn connect(self, addr: impl ServerAddr) -> Result<Client, ConnectError> {
        let name = normalize_name(&self.name).map_err(ConnectError::InvalidName)?;
        let room = if self.room.is_empty() {
            String::new()
        } else {
            normalize_room(&self.room).map_err(ConnectError::InvalidRoom)?
        };
        if let Some(Token(token)) = &self.token {
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
        let now = Instant::now();
        // A timeout too long to represent as an instant is as good as none.
        let deadline = now
            .checked_add(self.connect_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));

        let mut stream = start(addr, self.tls.as_ref(), deadline)?;
        let hello = Hello {
            version: VERSION,
            name: name.clone(),
            room,
            echo: self.echo,
            token: self.token.clone().map(|Token(token)| token),
            resume: None,
        };
        let (welcome, leftover) = handshake(&mut stream, hello, deadline)?;

        let socket = stream.socket().try_clone()?;
        socket.set_write_timeout(None)?;
        socket.set_read_timeout((!self.keepalive.is_zero()).then_some(self.keepalive))?;
        let max_payload = MAX_PAYLOAD.min(welcome.max_payload as usize);
        let shared = Arc::new(Shared::new(
            self.receive_mode,
            self.inbound_capacity,
            self.outbound_capacity,
            welcome.members,
        ));

        let writer = {
            let (shared, stream) = (Arc::clone(&shared), stream.try_clone()?);
            thread::Builder::new()
                .name("relais-writer".into())
                .spawn(move || worker::run_writer(&shared, stream))?
        };
        // The reader takes the handshake's end: under TLS it may hold
        // records read past the welcome.
        let reader = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("relais-reader".into())
                .spawn(move || worker::run_reader(&shared, stream, leftover))
        };
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                // The writer must not outlive a failed connect.
                shared.end(Disconnect::ConnectionLost(e.to_string()));
                let _ = socket.shutdown(std::net::Shutdown::Both);
                let _ = writer.join();
                return Err(e.into());
            }
        };

        Ok(Client::new(
            name,
            welcome.room,
            max_payload,
            shared,
            socket,
            reader,
            writer,
        ))
    }
}

/// The time left before `deadline`, or `Timeout` if none is.
pub(crate) fn remaining(deadline: Instant) -> Result<Duration, ConnectError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or(ConnectError::Timeout)
}

/// An I/O error during the connect phase, with socket timeouts reported as
/// the connect timeout they stand for.
pub(crate) fn io_error(e: io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnectError::Timeout,
        _ => ConnectError::Io(e),
    }
}

/// Opens a TCP connection to the first address that accepts one.
fn open(addr: impl ToSocketAddrs, deadline: Instant) -> Result<TcpStream, ConnectError> {
    let mut last_error = None;
    for addr in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => io_error(e),
        None => ConnectError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to no socket address",
        )),
    })
}

/// Connects to `addr` and returns the byte stream over the connection: the
/// socket, or TLS over it once its handshake is done (both bounded by
/// `deadline`; TLS checks the certificate against `addr`'s host).
fn start(
    addr: impl ServerAddr,
    tls: Option<&TlsOptions>,
    deadline: Instant,
) -> Result<Transport, ConnectError> {
    let host = addr.host();
    let socket = open(addr, deadline)?;
    socket.set_nodelay(true)?;
    Ok(match tls {
        None => Transport::Plain(socket),
        Some(options) => Transport::Tls(tls::connect(socket, options, host, deadline)?),
    })
}

/// Sends `HELLO` and reads until `WELCOME` or `REFUSED`. Returns the welcome
/// and any bytes read past it (frames the server sent right after), which
/// belong to the reader thread.
fn handshake(
    stream: &mut Transport,
    hello: Hello,
    deadline: Instant,
) -> Result<(Welcome, BytesMut), ConnectError> {
    stream
        .socket()
        .set_write_timeout(Some(remaining(deadline)?))?;
    stream
        .write_all(&ClientFrame::Hello(hello).to_bytes())
        .map_err(io_error)?;

    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    match read_frame(stream, &mut decoder, &mut buf, deadline)? {
        ServerFrame::Welcome(w) if w.version == VERSION => Ok((w, buf)),
        ServerFrame::Welcome(w) => Err(ConnectError::Protocol(format!(
            "server speaks protocol version {}, this client {VERSION}",
            w.version
        ))),
        ServerFrame::Refused(reason, message) => Err(ConnectError::Refused { reason, message }),
        ServerFrame::Goodbye(reason, message) => {
            tracing::debug!(%reason, %message, "server said goodbye during the handshake");
            Err(ConnectError::Closed)
        }
        other => Err(ConnectError::Protocol(format!(
            "expected WELCOME or REFUSED, got {}",
            frame_name(&other)
        ))),
    }
}

/// Reads one whole frame, before `deadline`.
fn read_frame(
    stream: &mut Transport,
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<ServerFrame, ConnectError> {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if let Some(body) = decoder
            .decode(buf)
            .map_err(|e| speaks_tls(buf).unwrap_or(ConnectError::Protocol(e.to_string())))?
        {
            return ServerFrame::decode(body).map_err(|e| ConnectError::Protocol(e.to_string()));
        }
        stream
            .socket()
            .set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(speaks_tls(buf).unwrap_or(ConnectError::Closed)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// A plaintext client's answer from a TLS port starts with a TLS alert
/// record (type 21, version 3.x): say so rather than "protocol error".
fn speaks_tls(buf: &[u8]) -> Option<ConnectError> {
    buf.starts_with(&[21, 3]).then(|| {
        ConnectError::Protocol(
            "the server answered with TLS: it expects TLS on this port \
             (ClientBuilder::tls, or --tls on the command line)"
                .into(),
        )
    })
}

/// Asks the server at `addr` for its rooms and their member counts (an
/// operator's view; no name is registered).
///
/// ```no_run
/// for room in relais::list_rooms("127.0.0.1:7777")? {
///     println!("{}: {} members", room.name, room.members);
/// }
/// # Ok::<(), relais::ConnectError>(())
/// ```
pub fn list_rooms(addr: impl ServerAddr) -> Result<Vec<RoomInfo>, ConnectError> {
    rooms_of(addr, None)
}

/// [`list_rooms`] over TLS, verified as `tls` says (see
/// [`ClientBuilder::tls`]).
///
/// ```no_run
/// let tls = relais::TlsOptions::new().ca_file("ca.pem");
/// for room in relais::list_rooms_tls("relais.example.org:7777", &tls)? {
///     println!("{}: {} members", room.name, room.members);
/// }
/// # Ok::<(), relais::ConnectError>(())
/// ```
pub fn list_rooms_tls(
    addr: impl ServerAddr,
    tls: &TlsOptions,
) -> Result<Vec<RoomInfo>, ConnectError> {
    rooms_of(addr, Some(tls))
}

fn rooms_of(
    addr: impl ServerAddr,
    tls: Option<&TlsOptions>,
) -> Result<Vec<RoomInfo>, ConnectError> {
    let deadline = Instant::now() + DEFAULT_CONNECT_TIMEOUT;
    let mut stream = start(addr, tls, deadline)?;
    stream
        .socket()
        .set_write_timeout(Some(remaining(deadline)?))?;
    stream
        .write_all(&ClientFrame::ListRooms.to_bytes())
        .map_err(io_error)?;
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    let mut all = Vec::new();
    loop {
        match read_frame(&mut stream, &mut decoder, &mut buf, deadline)? {
            ServerFrame::RoomList { rooms, more } => {
                all.extend(rooms);
                if !more {
                    return Ok(all);
                }
            }
            ServerFrame::Refused(reason, message) => {
                return Err(ConnectError::Refused { reason, message })
            }
            other => {
                return Err(ConnectError::Protocol(format!(
                    "expected ROOM_LIST, got {}",
                    frame_name(&other)
                )))
            }
        }
    }
}
