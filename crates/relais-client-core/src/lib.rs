//! The relais client without I/O: one state machine that every Rust client
//! drives (the blocking [`relais::Client`], the async `relais::AsyncClient`,
//! the benchmark's generator and the fuzz target).
//!
//! Bytes go in ([`Core::handle_input`]); frames to write
//! ([`Core::poll_transmit`]), events ([`Core::poll_event`]), what to do with
//! the transport ([`Core::poll_action`]) and the next timer deadline
//! ([`Core::poll_timeout`]) come out. The time is always passed in. Nothing
//! here opens a socket, reads a clock or spawns anything, so the whole
//! client, reconnecting included, is tested on byte literals.
//!
//! What it does:
//!
//! - the handshake (`HELLO`, then `WELCOME` or `REFUSED`), within a deadline;
//! - frame decoding, the member list, and the events the application sees;
//! - keepalive: `PONG` for every `PING`, a `PING` after each silent interval,
//!   and a lost connection after three;
//! - the outbound queue: bounded, dropping its oldest payload when full;
//! - closing: queued payloads, `GOODBYE`, the server's `GOODBYE`, within a
//!   deadline;
//! - reconnecting with resume: after a lost connection, new attempts with
//!   jittered exponential backoff, presenting the seat's resume token, until
//!   a reconnect window passes; the member list is then reconciled and the
//!   difference reported as `Joined`/`Left` events.
//!
//! A driver's loop, in outline:
//!
//! ```text
//! loop {
//!     match core.poll_action() {
//!         Some(Action::Connect { deadline }) => open a transport by `deadline`,
//!             then core.connected(now), or core.connect_failed(error, now),
//!         Some(Action::Disconnect) => drop the transport,
//!         None => {}
//!     }
//!     if core.is_finished() { break }
//!     core.poll_transmit(&mut out); write `out`
//!     while let Some(event) = core.poll_event() { hand it to the application }
//!     wait for: bytes (core.handle_input / handle_eof / io_failed), the user
//!     (core.send / core.close), or core.poll_timeout() (core.handle_timeout)
//! }
//! ```
//!
//! [`relais::Client`]: https://docs.rs/relais

mod backoff;
mod core;
mod error;
mod event;

pub use crate::backoff::Backoff;
pub use crate::core::{Action, Core, Options, RoomLister, State, Update, UNKNOWN_REASON};
pub use crate::error::{ConnectError, Disconnect, RecvError, SendError};
pub use crate::event::{Event, Message};
