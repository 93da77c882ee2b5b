//! Machine-readable codes: why a handshake was refused, why a connection or a
//! room membership ended.

use std::fmt;

/// Why the server refused a handshake (`REFUSED` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Another client of the room already holds this name.
    NameTaken,
    /// The name breaks the naming rule (see [`normalize_name`](crate::normalize_name)).
    InvalidName,
    /// The room name breaks the naming rules.
    InvalidRoom,
    /// The server does not speak the protocol version the client asked for.
    UnsupportedVersion,
    /// The server holds its maximum number of connections.
    ServerFull,
    /// The room holds its maximum number of members.
    RoomFull,
    /// The server requires a join token and the `HELLO` carried none.
    TokenRequired,
    /// The join token is malformed, or its signature or algorithm is wrong.
    TokenInvalid,
    /// The join token has expired.
    TokenExpired,
    /// The join token does not allow this name or this room.
    NotAllowed,
    /// The server is at its memory budget and takes no new work for now.
    Overloaded,
    /// Too many connections, or handshakes in progress, from this address.
    TooManyConnections,
    /// Too many joins from this address in the last seconds.
    TooManyJoins,
    /// The resume token is malformed, was not issued by this server (a
    /// restarted server forgets its tokens), or is for another name or room.
    /// Join afresh, without it.
    ResumeInvalid,
    /// The server is a cluster node that cannot reach its backplane (NATS),
    /// so it cannot check that the name is unique in the cluster; try again
    /// later or another node.
    ClusterUnavailable,
    /// A code this version of the library does not know.
    Unknown(u8),
}

impl RefuseReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::NameTaken => 1,
            Self::InvalidName => 2,
            Self::InvalidRoom => 3,
            Self::UnsupportedVersion => 4,
            Self::ServerFull => 5,
            Self::RoomFull => 6,
            Self::TokenRequired => 7,
            Self::TokenInvalid => 8,
            Self::TokenExpired => 9,
            Self::NotAllowed => 10,
            Self::Overloaded => 11,
            Self::TooManyConnections => 12,
            Self::TooManyJoins => 13,
            Self::ResumeInvalid => 14,
            Self::ClusterUnavailable => 15,
            Self::Unknown(c) => c,
        }
    }

    /// The reason a wire code stands for.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::NameTaken,
            2 => Self::InvalidName,
            3 => Self::InvalidRoom,
            4 => Self::UnsupportedVersion,
            5 => Self::ServerFull,
            6 => Self::RoomFull,
            7 => Self::TokenRequired,
            8 => Self::TokenInvalid,
            9 => Self::TokenExpired,
            10 => Self::NotAllowed,
            11 => Self::Overloaded,
            12 => Self::TooManyConnections,
            13 => Self::TooManyJoins,
            14 => Self::ResumeInvalid,
            15 => Self::ClusterUnavailable,
            c => Self::Unknown(c),
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameTaken => f.write_str("name taken"),
            Self::InvalidName => f.write_str("invalid name"),
            Self::InvalidRoom => f.write_str("invalid room name"),
            Self::UnsupportedVersion => f.write_str("unsupported protocol version"),
            Self::ServerFull => f.write_str("server full"),
            Self::RoomFull => f.write_str("room full"),
            Self::TokenRequired => f.write_str("token required"),
            Self::TokenInvalid => f.write_str("invalid token"),
            Self::TokenExpired => f.write_str("token expired"),
            Self::NotAllowed => f.write_str("not allowed by token"),
            Self::Overloaded => f.write_str("server overloaded"),
            Self::TooManyConnections => f.write_str("too many connections from this address"),
            Self::TooManyJoins => f.write_str("too many joins from this address"),
            Self::ResumeInvalid => f.write_str("resume token invalid"),
            Self::ClusterUnavailable => f.write_str("cluster unavailable"),
            Self::Unknown(c) => write!(f, "refused (code {c})"),
        }
    }
}

/// Why a connection closed (`GOODBYE` frame) or a member left a room (`LEFT`
/// frame). The same codes serve both, so a client that was dropped and the
/// room that saw it go read the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed on purpose.
    Normal,
    /// The server is shutting down.
    ServerShutdown,
    /// The recipient stayed unwritable past the write deadline, or let too
    /// much undeliverable data pile up.
    SlowConsumer,
    /// The peer stopped answering keepalive pings, or did not complete its
    /// handshake in time.
    Timeout,
    /// The client kept sending far above the allowed rate.
    RateLimit,
    /// The peer sent bytes that break the protocol.
    ProtocolError,
    /// The connection failed or was closed without a goodbye.
    ConnectionLost,
    /// A read-only member (its join token says so) sent a message.
    ReadOnly,
    /// A code this version of the library does not know.
    Unknown(u8),
}

impl CloseReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::ServerShutdown => 1,
            Self::SlowConsumer => 2,
            Self::Timeout => 3,
            Self::RateLimit => 4,
            Self::ProtocolError => 5,
            Self::ConnectionLost => 6,
            Self::ReadOnly => 7,
            Self::Unknown(c) => c,
        }
    }

    /// The reason a wire code stands for.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Normal,
            1 => Self::ServerShutdown,
            2 => Self::SlowConsumer,
            3 => Self::Timeout,
            4 => Self::RateLimit,
            5 => Self::ProtocolError,
            6 => Self::ConnectionLost,
            7 => Self::ReadOnly,
            c => Self::Unknown(c),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("left"),
            Self::ServerShutdown => f.write_str("server shutting down"),
            Self::SlowConsumer => f.write_str("slow consumer"),
            Self::Timeout => f.write_str("timed out"),
            Self::RateLimit => f.write_str("rate limit"),
            Self::ProtocolError => f.write_str("protocol error"),
            Self::ConnectionLost => f.write_str("connection lost"),
            Self::ReadOnly => f.write_str("read only"),
            Self::Unknown(c) => write!(f, "closed (code {c})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(RefuseReason::from_code(c).code(), c);
            assert_eq!(CloseReason::from_code(c).code(), c);
        }
        // Every code from 1 to 15 has a name; the next is unknown.
        for c in 1..=15u8 {
            assert!(
                !matches!(RefuseReason::from_code(c), RefuseReason::Unknown(_)),
                "{c}"
            );
        }
        assert_eq!(RefuseReason::from_code(16), RefuseReason::Unknown(16));
        assert_eq!(
            RefuseReason::from_code(15),
            RefuseReason::ClusterUnavailable
        );
        assert_eq!(
            RefuseReason::ClusterUnavailable.to_string(),
            "cluster unavailable"
        );
    }
}
