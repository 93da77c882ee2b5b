//! What the application receives.

use bytes::Bytes;
use relais_protocol::CloseReason;

use crate::Disconnect;

/// A message relayed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The registered name of the client that sent it, stamped by the server.
    pub sender: String,
    /// The payload, as sent.
    pub payload: Bytes,
}

/// Something that happened in the room, in the order it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A relayed message.
    Message(Message),
    /// A member joined the room (or, after a reconnect, is there and was not
    /// before).
    Joined(String),
    /// A member left the room.
    Left {
        /// Who left.
        name: String,
        /// Why: [`CloseReason::Normal`] if they closed on purpose, and
        /// `CloseReason::Unknown(255)` ([`UNKNOWN_REASON`](crate::UNKNOWN_REASON))
        /// for a member that left while this client was reconnecting.
        reason: CloseReason,
    },
    /// The connection was lost, for this reason; the client is getting it
    /// back (it is [`State::Reconnecting`](crate::State::Reconnecting)).
    Reconnecting(Disconnect),
    /// The client is connected again. `resumed`: the server gave its seat
    /// back, and the others saw nothing; otherwise it joined afresh, and the
    /// others saw it leave and come back. Either way the membership changes
    /// meanwhile came just before this, as `Joined`/`Left` events.
    Reconnected {
        /// Whether the seat was resumed.
        resumed: bool,
    },
}
