//! Blocking Rust client for relais, a real-time relay for multiplayer games.
//!
//! Connect, [`send`](Client::send) your latest state, [`recv`](Client::recv)
//! everyone else's. Neither call blocks: the networking runs on two
//! background threads the user never sees, so both fit in a game loop.
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
//! - `builder.rs`: [`ClientBuilder`], the options, and the synchronous
//!   connect and handshake.
//! - `client.rs`: [`Client`], the handle, and what it hands out ([`Message`],
//!   [`Event`], [`Stats`], [`Iter`]).
//! - `shared.rs`: the state the handle and the threads share (queues, member
//!   list, status, counters) and how they wait on it.
//! - `worker.rs`: the reader and writer threads.
//! - `queue.rs`: the bounded queues: drop-oldest, and latest-per-sender.
//! - `transport.rs`: the byte stream the threads use, plain TCP or TLS
//!   (`tls.rs`: [`TlsOptions`], the handshake, the shared TLS session);
//!   `addr.rs`: [`ServerAddr`], addresses and the host name TLS verifies.
//! - `error.rs`: [`ConnectError`], [`SendError`], [`RecvError`] and
//!   [`Disconnect`].
//!
//! The wire format itself lives in the `relais-protocol` crate.

mod addr;
mod builder;
mod client;
mod error;
mod queue;
mod shared;
mod tls;
mod transport;
mod worker;

pub use addr::ServerAddr;
pub use builder::{list_rooms, list_rooms_tls, ClientBuilder, ReceiveMode};
pub use bytes::Bytes;
pub use client::{Client, Event, Iter, Message, Stats};
pub use error::{ConnectError, Disconnect, RecvError, SendError};
pub use relais_protocol::{
    CloseReason, NameError, RefuseReason, RoomInfo, DEFAULT_ROOM, MAX_PAYLOAD, MAX_TOKEN_LEN,
};
pub use tls::TlsOptions;

/// The README's examples compile (they are run as doc tests).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
