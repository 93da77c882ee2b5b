//! Server limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of a relais server. `Config::default()` gives the
/// documented defaults (see `SECURITY.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most connections served at once. Past it, a new connection gets the
    /// refusal "server full" and is closed.
    pub max_connections: usize,
    /// How long a new connection has to complete its handshake.
    pub handshake_timeout: Duration,
    /// After this long without receiving anything from a client, the server
    /// pings it; after two unanswered pings the client is dropped.
    pub keepalive_interval: Duration,
    /// A recipient is dropped as a slow consumer when its socket does not
    /// take a whole batch (everything that waited for it, at most one message
    /// per sender) within this long, or when it has data waiting and its
    /// connection acknowledges nothing for this long (see
    /// [`crate::pacing`]). Also bounds the last frames written to a
    /// connection that is being closed.
    pub write_deadline: Duration,
    /// Most bytes that may wait in one recipient's outbox or be in the batch
    /// being written to it (each frame counted with 40 bytes for its handle and metrics stamp); past
    /// it the recipient is dropped as a slow consumer. Conflation keeps one
    /// message per sender, so this is only reached by a recipient that has
    /// stopped reading in a room of many large senders; the late-joiner
    /// snapshot is pulled only while it fits.
    pub max_pending_bytes: usize,
    /// Shortest time between two writes to a busy client (one receiving
    /// more than [`crate::batching::BUSY_RATE`] frames a second): messages
    /// arriving meanwhile are written together (one system call for many),
    /// which is most of the server's CPU saving in large rooms. A less busy
    /// client is written to at once. Zero writes every batch at once.
    pub flush_interval: Duration,
    /// Kernel send buffer of each client socket (`SO_SNDBUF`; Linux doubles
    /// it for bookkeeping), or 0 (the default) for the kernel's autotuning.
    /// Pacing ([`crate::pacing`]) already keeps what waits in the kernel to
    /// about what the link drains in a round trip plus max(20 ms, a round
    /// trip); a fixed small
    /// buffer would only cap throughput on links with a long round trip
    /// (at most this much can be in flight).
    pub send_buffer_bytes: usize,
    /// On shutdown, how long clients get to receive what is pending and the
    /// goodbye before their connections are cut.
    pub shutdown_grace: Duration,
    /// Messages a second one client may send. Above it, the excess is
    /// conflated: only the newest over-rate message is kept and relayed as
    /// soon as the rate allows.
    pub max_message_rate: u32,
    /// Messages a client may send at once above the rate (the bucket size).
    pub message_burst: u32,
    /// A client that sends more than `flood_factor` × `max_message_rate` ×
    /// `flood_seconds` messages within any `flood_seconds` (a sliding window,
    /// so bursts with pauses between them count in full) is dropped with
    /// reason "rate limit".
    pub flood_factor: u32,
    /// See `flood_factor`.
    pub flood_seconds: u32,
    /// Most connections open at once from one address (an IPv4 address or
    /// an IPv6 /64); past it, "too many connections". 0: no limit.
    pub max_connections_per_ip: usize,
    /// Most connections from one address that have not finished their
    /// handshake (TLS, HTTP upgrade, `HELLO`); past it, "too many
    /// connections". 0: no limit.
    pub max_handshakes_per_ip: usize,
    /// Joins a second one address may make (a token bucket of
    /// `join_burst_per_ip`); past it, "too many joins". 0: no limit.
    pub max_joins_per_ip: u32,
    /// See `max_joins_per_ip`.
    pub join_burst_per_ip: u32,
    /// Most bytes of buffers the whole server may hold (see
    /// [`crate::budget`]): past 7/8 of it, new connections and joins are
    /// refused "server overloaded"; at it, relayed messages wait.
    pub max_memory_bytes: usize,
    /// How long the seat of a member that can resume (its `HELLO` set
    /// `FLAG_RESUME`) is kept, parked, after its connection is lost, times
    /// out or is dropped as a slow consumer: its name, place and latest
    /// message stay, nobody is told, nothing is queued for it. A connection
    /// presenting its resume token within this time takes it back unseen;
    /// after it, the member leaves with the original reason. Zero never
    /// parks. At most [`MAX_RESUME_GRACE`]; a larger value counts as that.
    pub resume_grace: Duration,
}

/// The longest [`Config::resume_grace`]: every parked seat holds a name and
/// its latest message, and each took a join from its address's join rate.
pub const MAX_RESUME_GRACE: Duration = Duration::from_secs(300);

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            write_deadline: Duration::from_secs(5),
            max_pending_bytes: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            send_buffer_bytes: 0,
            flush_interval: Duration::from_millis(1),
            max_message_rate: 120,
            message_burst: 120,
            flood_factor: 4,
            flood_seconds: 5,
            max_connections_per_ip: 64,
            max_handshakes_per_ip: 16,
            max_joins_per_ip: 10,
            join_burst_per_ip: 30,
            max_memory_bytes: 512 * 1024 * 1024,
            resume_grace: Duration::from_secs(10),
        }
    }
}
