//! Connection options and the synchronous handshake.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use relais_client_core::{ConnectError, Core, Options, RoomLister};
use relais_protocol::RoomInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::addr::ServerAddr;
use crate::async_client::AsyncClient;
use crate::client::Client;
use crate::driver::drive;
use crate::shared::Shared;
use crate::tls::TlsOptions;
use crate::transport::Target;

/// Default for [`ClientBuilder::inbound_capacity`].
const DEFAULT_INBOUND_CAPACITY: usize = 4096;

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
    /// What the core takes, with its defaults (its `Debug` shows the join
    /// token's length only: it is a credential).
    options: Options,
    tls: Option<TlsOptions>,
    receive_mode: ReceiveMode,
    inbound_capacity: usize,
}

impl ClientBuilder {
    /// Options for a client registering as `name`, with every default.
    pub fn new(name: &str) -> Self {
        Self {
            options: Options::new(name),
            tls: None,
            receive_mode: ReceiveMode::Queue,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
        }
    }

    /// The room to join. Empty (the default) joins the server's default room,
    /// [`DEFAULT_ROOM`](crate::DEFAULT_ROOM); [`Client::room`] tells which.
    pub fn room(mut self, room: &str) -> Self {
        self.options.room = room.to_owned();
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
        self.options.token = Some(token.into());
        self
    }

    /// Whether this client receives its own messages back (default `true`;
    /// the echo is how a client measures its round trip).
    pub fn echo(mut self, echo: bool) -> Self {
        self.options.echo = echo;
        self
    }

    /// How long the TCP connection plus the handshake may take (default 5 s).
    /// Name resolution is not covered: it is done by the system resolver,
    /// which has no timeout to give it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
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
        self.options.keepalive = interval;
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
        self.options.outbound_capacity = capacity;
        self
    }

    /// How long to keep trying to get a lost connection back (default 60 s;
    /// zero never reconnects: a lost connection then closes the client).
    ///
    /// After a lost connection (end of stream, a network error, a silent
    /// server, or a server restarting), the client reconnects by itself,
    /// with jittered exponential backoff (100 ms doubling to 5 s), and
    /// resumes its seat: same name, the room's current state, and the
    /// others see no leave. Meanwhile [`Client::state`] is
    /// [`State::Reconnecting`](crate::State::Reconnecting), `send` keeps
    /// queuing, and `recv` returns what arrived before. Members who came or
    /// went meanwhile are reported as `Joined` and `Left` events (reason
    /// [`UNKNOWN_REASON`](crate::UNKNOWN_REASON) for the ones gone).
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let client = relais::Client::builder("alice")
    ///     .reconnect_window(Duration::from_secs(30))
    ///     .connect("127.0.0.1:7777")?;
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.options.reconnect_window = window;
        self
    }

    /// Checks the names, connects, performs the handshake, and starts the
    /// background thread. Blocks until the server has answered, or the
    /// connect timeout has passed. A failure here is returned, not retried.
    ///
    /// The name and room are checked against the naming rule
    /// ([`normalize_name`](relais_protocol::normalize_name)) and sent in the
    /// NFC form the server registers, so [`Client::name`] is the name the
    /// other members see.
    pub fn connect(self, addr: impl ServerAddr) -> Result<Client, ConnectError> {
        let (shared, target) = self.prepare(addr)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let driver = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("relais-client".into())
                .spawn(move || runtime.block_on(drive(shared, target)))?
        };
        match shared.wait_first() {
            Ok(()) => Ok(Client::new(shared, driver)),
            Err(e) => {
                let _ = driver.join();
                Err(e)
            }
        }
    }

    /// [`connect`](Self::connect) for async code: the client's I/O runs as
    /// a task on the current tokio runtime (which must have its I/O and time
    /// drivers enabled). Resolving a host name may block briefly; pass an
    /// IP address to avoid it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = relais::Client::builder("alice")
    ///     .room("arena-7")
    ///     .connect_async("127.0.0.1:7777")
    ///     .await?;
    /// client.send("x=10,y=20")?;
    /// let msg = client.recv().await?;
    /// println!("{}: {:?}", msg.sender, msg.payload);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_async(self, addr: impl ServerAddr) -> Result<AsyncClient, ConnectError> {
        let (shared, target) = self.prepare(addr)?;
        // Until the client is handed out, dropping this call (a timeout
        // around it, say) stops the connection too: no seat is left behind.
        let mut driver = AbortOnDrop(Some(tokio::spawn(drive(Arc::clone(&shared), target))));
        match shared.first_async().await {
            Ok(()) => Ok(AsyncClient::new(shared, driver.take())),
            Err(e) => {
                let _ = driver.take().await;
                Err(e)
            }
        }
    }

    /// The core and the target, checked and resolved.
    fn prepare(mut self, addr: impl ServerAddr) -> Result<(Arc<Shared>, Target), ConnectError> {
        self.options.seed = seed();
        let core = Core::new(self.options, Instant::now())?;
        let target = Target::resolve(addr, self.tls.as_ref())?;
        let shared = Arc::new(Shared::new(core, self.receive_mode, self.inbound_capacity));
        Ok((shared, target))
    }
}

/// A task aborted if dropped before it is taken.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn take(&mut self) -> tokio::task::JoinHandle<()> {
        self.0.take().expect("taken once")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A different jitter seed for every client, without a random-number crate:
/// the clock's nanoseconds and the address of a fresh allocation.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let here = Box::new(0u8);
    nanos ^ (&*here as *const u8 as u64).rotate_left(32)
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
    let target = Target::resolve(addr, tls)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The default connect timeout, for the whole listing.
    let timeout = Options::new("").connect_timeout;
    runtime.block_on(async {
        tokio::time::timeout(timeout, list(&target))
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    })
}

/// The listing itself: one request, `ROOM_LIST` frames until the last.
async fn list(target: &Target) -> Result<Vec<RoomInfo>, ConnectError> {
    let mut stream = target.open().await?;
    stream.write_all(&RoomLister::request()).await?;
    stream.flush().await?;
    let mut lister = RoomLister::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(lister.handle_eof());
        }
        if let Some(rooms) = lister.handle_input(&chunk[..n])? {
            return Ok(rooms);
        }
    }
}
