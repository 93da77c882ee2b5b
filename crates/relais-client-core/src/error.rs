//! Error and disconnect types, shared by every driver of the core: one enum
//! per operation, each variant a case a caller may want to branch on.

use relais_protocol::{CloseReason, NameError, RefuseReason};

/// Why `ClientBuilder::connect` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Resolving the address, connecting or talking to the server failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the handshake.
    #[error("refused by the server ({reason}): {message}")]
    Refused {
        /// The machine-readable reason, e.g. [`RefuseReason::NameTaken`].
        reason: RefuseReason,
        /// The server's human-readable explanation (may be empty).
        message: String,
    },
    /// The client name breaks the naming rules; nothing was sent.
    #[error("invalid client name: {0}")]
    InvalidName(NameError),
    /// The room name breaks the naming rules; nothing was sent.
    #[error("invalid room name: {0}")]
    InvalidRoom(NameError),
    /// The join token is longer than the protocol allows; nothing was sent.
    #[error("join token of {len} bytes exceeds the maximum of {max}")]
    TokenTooLong {
        /// The token's length in bytes.
        len: usize,
        /// The largest allowed, [`MAX_TOKEN_LEN`](relais_protocol::MAX_TOKEN_LEN).
        max: usize,
    },
    /// The join token is not ASCII (a JWT always is); nothing was sent.
    #[error("join token is not ASCII")]
    TokenNotAscii,
    /// The TCP connection and handshake did not complete within the connect
    /// timeout.
    #[error("timed out connecting to the server")]
    Timeout,
    /// The server answered with bytes or a frame that make no sense before
    /// the handshake completes.
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
    /// The server closed the connection (or said goodbye) without answering
    /// the handshake.
    #[error("the server closed the connection during the handshake")]
    Closed,
    /// TLS could not be set up: the server's certificate is not trusted or
    /// does not carry the server name, the server does not speak TLS, or the
    /// CA file is unusable. The message says which.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why a connection ended. Returned by `Client::status`
/// and carried by [`SendError::Closed`] and [`RecvError::Disconnected`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Disconnect {
    /// The user closed the client (`Client::close` or drop).
    #[error("closed by the client")]
    Closed,
    /// The server said goodbye, e.g. because it is shutting down
    /// ([`CloseReason::ServerShutdown`]) or because this client could not keep
    /// up ([`CloseReason::SlowConsumer`]).
    #[error("the server closed the connection ({reason}): {message}")]
    Goodbye {
        /// The machine-readable reason.
        reason: CloseReason,
        /// The server's human-readable explanation (may be empty).
        message: String,
    },
    /// Nothing came from the server for three keepalive intervals (two pings
    /// went unanswered).
    #[error("the server stopped answering keepalive pings")]
    Timeout,
    /// The connection failed, or the server closed it without a goodbye.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server sent bytes that break the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reconnecting failed for good: the server refused the new handshake
    /// for a reason that waiting does not cure (say, an expired join token),
    /// or the reconnect window passed while it kept refusing.
    #[error("refused by the server on reconnecting ({reason}): {message}")]
    Refused {
        /// The machine-readable reason.
        reason: RefuseReason,
        /// The server's human-readable explanation (may be empty).
        message: String,
    },
}

/// Why `Client::send` did not queue a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The payload is larger than the server relays; nothing was queued.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload allowed (see `Client::max_payload`).
        max: usize,
    },
    /// The connection has ended; nothing was queued.
    #[error("connection ended: {0}")]
    Closed(Disconnect),
}

/// Why a blocking receive returned without an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing arrived before the timeout; the connection is still up.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The connection has ended and everything received before the end has
    /// already been returned.
    #[error("disconnected: {0}")]
    Disconnected(Disconnect),
}
