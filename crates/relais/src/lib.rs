//! Blocking Rust client for relais, a real-time relay for multiplayer games.
//!
//! Connect, [`send`](Client::send) your latest state, [`recv`](Client::recv)
//! everyone else's. Neither call blocks: the networking runs on a
//! background thread the user never sees, so both fit in a game loop. For
//! async code, [`ClientBuilder::connect_async`] gives an [`AsyncClient`]
//! whose I/O runs on your tokio runtime. A lost connection is got back by
//! itself, resuming the seat (see [`ClientBuilder::reconnect_window`]).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let client = relais::Client::builder("alice").room("arena-7").connect("127.0.0.1:7777")?;
//! println!("in {} with {:?}", client.room(), client.members());
//! client.send("x=10,y=20")?;
//! let reply = client.recv_timeout(Duration::from_secs(1))?;
//! println!("{}: {:?}", reply.sender, reply.payload);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Queues
//!
//! Both directions are bounded and drop their **oldest** entry when full,
//! counting it in [`Stats`]: the send queue ([`ClientBuilder::outbound_capacity`])
//! and the receive queue ([`ClientBuilder::inbound_capacity`]). In a relay
//! of live state, the newest update is the one worth keeping.
//!
//! For game state, also make the receive queue keep only each sender's
//! newest message, with [`ReceiveMode::LatestPerSender`]
//! ([`ClientBuilder::receive_mode`]): a loop that stalls then reads at most
//! one message per player, and every join and leave. The default,
//! [`ReceiveMode::Queue`], keeps every message (chat, commands).
//!
//! # Layout
//!
//! - `builder.rs`: [`ClientBuilder`], the options, `connect` and
//!   `connect_async`, and [`list_rooms`].
//! - `client.rs`: [`Client`], the blocking handle; `async_client.rs`:
//!   [`AsyncClient`], the async one.
//! - `driver.rs`: the one task that does a client's I/O, driving the core.
//! - `shared.rs`: the state a handle and its driver share (the core, the
//!   receive queue, status, counters) and how they wait on it.
//! - `queue.rs`: the receive queues: drop-oldest, and latest-per-sender.
//! - `transport.rs`: TCP or TLS, opened anew on each (re)connect
//!   (`tls.rs`: [`TlsOptions`]); `addr.rs`: [`ServerAddr`].
//!
//! The protocol logic (handshake, frames, keepalive, reconnect and resume,
//! the outbound queue) is the sans-IO `relais-client-core` crate; the wire
//! format, the `relais-protocol` crate.

mod addr;
mod async_client;
mod builder;
mod client;
mod driver;
mod queue;
mod shared;
mod tls;
mod transport;

/// The error types, defined once in the client core.
mod error {
    pub use relais_client_core::{ConnectError, Disconnect, RecvError, SendError};
}

pub use addr::ServerAddr;
pub use async_client::{AsyncClient, Events};
pub use builder::{list_rooms, list_rooms_tls, ClientBuilder, ReceiveMode};
pub use bytes::Bytes;
pub use client::{Client, Iter, Stats};
pub use error::{ConnectError, Disconnect, RecvError, SendError};
pub use relais_client_core::{Event, Message, State, UNKNOWN_REASON};
pub use relais_protocol::{
    CloseReason, NameError, RefuseReason, RoomInfo, DEFAULT_ROOM, MAX_PAYLOAD, MAX_TOKEN_LEN,
};
pub use tls::TlsOptions;

/// The README's examples compile (they are run as doc tests).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
