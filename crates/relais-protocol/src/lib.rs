//! The relais wire format, as pure encode/decode over bytes ("sans-IO").
//!
//! Nothing here touches a socket, a clock or a runtime: transports (TCP,
//! WebSocket) feed bytes in and take bytes out, so every rule of the format is
//! testable on byte literals. `PROTOCOL.md` at the repository root describes the
//! same format byte by byte for implementers in other languages.
//!
//! Layout:
//! - [`codec`]: the length-prefixed framing ([`FrameDecoder`]), which checks the
//!   announced length against a maximum *before* buffering anything.
//! - [`frames`]: the frame types ([`ClientFrame`], [`ServerFrame`]) and their
//!   encodings, plus the fast path the server uses to encode a relayed message
//!   once for all recipients ([`encode_message`]).
//! - [`names`]: the rule for client and room names: their NFC form
//!   ([`normalize_name`], [`normalize_room`]) and the key that makes
//!   look-alike client names one name ([`name_key`]).
//! - [`codes`]: refusal and goodbye/leave reason codes.

pub mod codec;
pub mod codes;
pub mod frames;
pub mod names;

pub use codec::{FrameDecoder, FrameError};
pub use codes::{CloseReason, RefuseReason};
pub use frames::{
    encode_message, ClientFrame, DecodeError, Hello, Resume, RoomInfo, ServerFrame, Welcome,
    FLAG_ECHO, FLAG_RESUME, FLAG_RESUMED, FLAG_TOKEN,
};
pub use names::{
    is_unsafe_to_display, name_key, normalize_name, normalize_room, validate_name, validate_room,
    NameError,
};

/// The protocol version this crate speaks. Sent in `HELLO` and `WELCOME`.
pub const VERSION: u16 = 1;

/// Largest application payload of one `DATA`/`MESSAGE` frame, in bytes (64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Longest client or room name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;

/// Largest frame body (type byte + fields, i.e. the value of the length prefix)
/// either side accepts once the handshake is done: a maximal payload plus room
/// for the headers of the largest frame that carries one (`MESSAGE`).
pub const MAX_FRAME_LEN: usize = MAX_PAYLOAD + 256;

/// Longest join token a `HELLO` may carry, in bytes (ASCII: a JWT in compact
/// form). Ample for an RS256 token signed with a 4096-bit key.
pub const MAX_TOKEN_LEN: usize = 2048;

/// Largest frame body accepted before the handshake completes: a `HELLO` with
/// maximal name, room and token. A server uses this as the decoder limit
/// until it has answered the handshake, so an unauthenticated peer can make
/// it buffer at most this many bytes.
pub const MAX_HELLO_LEN: usize =
    1 + 2 + 1 + 1 + MAX_NAME_LEN + 1 + MAX_NAME_LEN + 2 + MAX_TOKEN_LEN + 1 + MAX_RESUME_TOKEN_LEN;

/// Longest resume token a `HELLO` or `WELCOME` may carry, in bytes (ASCII).
pub const MAX_RESUME_TOKEN_LEN: usize = 64;

/// Most members one room may hold. It is what lets a `WELCOME` carry the whole
/// member list in one frame: 1,000 names of at most 65 encoded bytes each fit
/// in [`MAX_FRAME_LEN`].
pub const MAX_ROOM_MEMBERS: usize = 1000;

/// The room a client joins when its `HELLO` names none (an empty room field).
pub const DEFAULT_ROOM: &str = "lobby";

/// Size of the length prefix that precedes every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;
