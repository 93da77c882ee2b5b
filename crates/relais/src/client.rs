//! The handle the user holds: [`Client`], and what it hands out.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use relais_client_core::State;

use crate::builder::ClientBuilder;
use crate::error::{ConnectError, Disconnect, RecvError, SendError};
use crate::shared::{Shared, Wait};
use crate::{Event, Message};

/// How long [`Client::close`] waits for the driver beyond the core's own
/// close timeout (queued payloads, both goodbyes: 2 s).
const CLOSE_JOIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Counters of one connection, from [`Client::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Payloads written to the connection.
    pub sent: u64,
    /// Messages received from the server (including any later replaced or
    /// dropped in the receive queue).
    pub received: u64,
    /// Queued payloads dropped, oldest first, because the outbound queue was
    /// full (see [`ClientBuilder::outbound_capacity`]).
    pub dropped_outbound: u64,
    /// Received events dropped because the receive queue was full (see
    /// [`ClientBuilder::inbound_capacity`] and
    /// [`ReceiveMode`](crate::ReceiveMode)).
    pub dropped_inbound: u64,
    /// Received messages replaced, while waiting in the receive queue, by a
    /// newer message from the same sender
    /// ([`ReceiveMode::LatestPerSender`](crate::ReceiveMode::LatestPerSender)
    /// only; always 0 in [`ReceiveMode::Queue`](crate::ReceiveMode::Queue)).
    /// Not counted in `dropped_inbound`.
    pub recv_conflated: u64,
}

/// A connection to a relais server.
///
/// Connecting is synchronous; after it, a hidden background thread does the
/// networking: [`send`](Self::send) only queues, and [`recv`](Self::recv)
/// only looks at what has already arrived, so both are safe to call every
/// frame of a game loop. Both queues are bounded and drop their *oldest*
/// entry when full (see [`ClientBuilder`]); for game state, have the receive
/// queue keep only each sender's newest message with
/// [`ReceiveMode::LatestPerSender`](crate::ReceiveMode::LatestPerSender).
///
/// All methods but [`close`](Self::close) take `&self`: a `Client` can be
/// shared between threads (e.g. in an `Arc`), one sending, one receiving.
/// Dropping it closes the connection as `close` does.
///
/// ```no_run
/// let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
/// client.send("hello")?;
/// // A game loop: each frame, take whatever has arrived.
/// loop {
///     while let Some(msg) = client.recv() {
///         println!("{}: {:?}", msg.sender, msg.payload);
///     }
///     # break;
///     // ... simulate and render the frame ...
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client {
    name: String,
    room: String,
    shared: Arc<Shared>,
    /// The thread that runs the driver; `None` once closed.
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Connects to `addr` as `name`, in the default room, with default
    /// options. Shorthand for `Client::builder(name).connect(addr)`.
    ///
    /// ```no_run
    /// use relais::{Client, ConnectError, RefuseReason};
    ///
    /// match Client::connect("127.0.0.1:7777", "alice") {
    ///     Ok(client) => println!("joined {} with {:?}", client.room(), client.members()),
    ///     Err(ConnectError::Refused { reason: RefuseReason::NameTaken, .. }) => {
    ///         println!("pick another name")
    ///     }
    ///     Err(e) => println!("could not connect: {e}"),
    /// }
    /// ```
    pub fn connect(addr: impl crate::ServerAddr, name: &str) -> Result<Client, ConnectError> {
        Self::builder(name).connect(addr)
    }

    /// Options for a connection registering as `name`.
    ///
    /// ```no_run
    /// let client = relais::Client::builder("alice").room("arena-7").connect("127.0.0.1:7777")?;
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn builder(name: &str) -> ClientBuilder {
        ClientBuilder::new(name)
    }

    pub(crate) fn new(shared: Arc<Shared>, driver: JoinHandle<()>) -> Self {
        let (name, room) = shared.names();
        Self {
            name,
            room,
            shared,
            driver: Mutex::new(Some(driver)),
        }
    }

    /// The name this client registered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room joined, as the server named it (so the default room's real
    /// name if none was asked for).
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The largest payload [`send`](Self::send) accepts: the smaller of
    /// [`MAX_PAYLOAD`](crate::MAX_PAYLOAD) and the server's limit.
    pub fn max_payload(&self) -> usize {
        self.shared.core().max_payload()
    }

    /// Where the connection stands: connected, reconnecting (after a lost
    /// connection, see
    /// [`ClientBuilder::reconnect_window`](crate::ClientBuilder::reconnect_window)),
    /// or closed.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// if client.state() == relais::State::Reconnecting {
    ///     println!("connection lost, getting it back...");
    /// }
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn state(&self) -> State {
        self.shared.core().state()
    }

    /// Queues `payload` for the room and returns at once; a background
    /// thread writes it. If the outbound queue is full, the oldest queued
    /// payload is dropped to make room (see [`Stats::dropped_outbound`]).
    ///
    /// Anything that converts into [`Bytes`] is accepted: `Vec<u8>`,
    /// `String`, `&'static [u8]`, `&'static str`, `Bytes`.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// let position = format!("{},{}", 10, 20);
    /// client.send(position)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.shared.send(payload.into())
    }

    /// The oldest received message, or `None` if none is waiting. Never
    /// blocks. Presence events queued before that message are dropped (the
    /// member list stays current regardless); use
    /// [`recv_event`](Self::recv_event) to see them. With
    /// [`ReceiveMode::LatestPerSender`](crate::ReceiveMode::LatestPerSender),
    /// a message is its sender's newest as of when it is taken.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// while let Some(msg) = client.recv() {
    ///     println!("{} sent {} bytes", msg.sender, msg.payload.len());
    /// }
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn recv(&self) -> Option<Message> {
        self.shared.take(only_messages, Wait::Poll).ok()
    }

    /// Waits up to `timeout` for a message (see [`recv`](Self::recv)).
    /// Messages received before a disconnect are still returned; the
    /// `Disconnected` error comes once they are all taken.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use relais::RecvError;
    ///
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// match client.recv_timeout(Duration::from_millis(100)) {
    ///     Ok(msg) => println!("{}: {:?}", msg.sender, msg.payload),
    ///     Err(RecvError::Timeout) => println!("quiet room"),
    ///     Err(RecvError::Disconnected(why)) => println!("gone: {why}"),
    /// }
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvError> {
        self.shared.take(only_messages, wait_for(timeout))
    }

    /// Waits for a message until one arrives or the connection ends (see
    /// [`recv_timeout`](Self::recv_timeout)).
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// let first = client.recv_blocking()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_blocking(&self) -> Result<Message, RecvError> {
        self.shared.take(only_messages, Wait::Forever)
    }

    /// The oldest received event (message, join or leave), or `None` if none
    /// is waiting. Never blocks.
    ///
    /// ```no_run
    /// use relais::Event;
    ///
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// while let Some(event) = client.recv_event() {
    ///     match event {
    ///         Event::Message(msg) => println!("{}: {:?}", msg.sender, msg.payload),
    ///         Event::Joined(name) => println!("{name} joined"),
    ///         Event::Left { name, reason } => println!("{name} left ({reason})"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn recv_event(&self) -> Option<Event> {
        self.shared.take(Some, Wait::Poll).ok()
    }

    /// Waits up to `timeout` for an event (see
    /// [`recv_timeout`](Self::recv_timeout) for disconnects).
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// let event = client.recv_event_timeout(std::time::Duration::from_secs(1));
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn recv_event_timeout(&self, timeout: Duration) -> Result<Event, RecvError> {
        self.shared.take(Some, wait_for(timeout))
    }

    /// Waits for an event until one arrives or the connection ends.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// while let Ok(event) = client.recv_event_blocking() {
    ///     println!("{event:?}");
    /// }
    /// println!("disconnected: {:?}", client.status());
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn recv_event_blocking(&self) -> Result<Event, RecvError> {
        self.shared.take(Some, Wait::Forever)
    }

    /// A blocking iterator over messages; it ends when the connection has
    /// ended and every message received before has been taken.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// for msg in client.iter() {
    ///     println!("{}: {:?}", msg.sender, msg.payload);
    /// }
    /// println!("disconnected: {:?}", client.status());
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter { client: self }
    }

    /// The members of the room, this client included: the list the server
    /// sent on joining, kept current from join and leave notices whether or
    /// not the user reads the events.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// println!("{} players here", client.members().len());
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn members(&self) -> Vec<String> {
        self.shared.core().members().to_vec()
    }

    /// Why the connection ended, or `None` while it is up.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// if let Some(why) = client.status() {
    ///     println!("disconnected: {why}");
    /// }
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn status(&self) -> Option<Disconnect> {
        self.shared.status()
    }

    /// The connection's counters.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// let stats = client.stats();
    /// println!("sent {}, dropped {}", stats.sent, stats.dropped_outbound);
    /// # Ok::<(), relais::ConnectError>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Closes the connection: writes the payloads still queued, says
    /// goodbye and waits for the server's goodbye (2 s at most in all),
    /// then waits for the background thread to exit. While reconnecting it
    /// closes at once. The status becomes
    /// [`Disconnect::Closed`] unless the connection had already ended.
    /// Calling it again does nothing; dropping the client does the same.
    ///
    /// ```no_run
    /// # let client = relais::Client::connect("127.0.0.1:7777", "alice")?;
    /// client.send("bye, all")?;
    /// client.close(); // "bye, all" is written before the goodbye
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        // Held for the whole close, so a concurrent second call returns only
        // once the first has finished.
        let mut driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        let Some(handle) = driver.take() else {
            return;
        };
        self.shared.close();
        // The core bounds the close (2 s); this bounds a driver stuck in a
        // write the kernel does not finish.
        if self
            .shared
            .wait_driver_finished(Instant::now() + CLOSE_JOIN_TIMEOUT)
            && handle.join().is_err()
        {
            tracing::error!("the relais client thread panicked");
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// A blocking iterator over a client's messages, from [`Client::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    client: &'a Client,
}

impl Iterator for Iter<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.client.recv_blocking().ok()
    }
}

impl<'a> IntoIterator for &'a Client {
    type Item = Message;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The pick of the receives that return messages only (see [`Shared::take`]).
pub(crate) fn only_messages(event: Event) -> Option<Message> {
    match event {
        Event::Message(msg) => Some(msg),
        _ => None,
    }
}

/// A wait of `timeout` from now; one too long to represent never ends.
fn wait_for(timeout: Duration) -> Wait {
    Instant::now()
        .checked_add(timeout)
        .map_or(Wait::Forever, Wait::Until)
}
