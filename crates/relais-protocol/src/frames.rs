//! Frame types and their encodings.
//!
//! A frame body is one type byte followed by the type's fields. Integers are
//! big-endian. A "short string" is a `u8` byte length followed by that many
//! bytes of UTF-8. Fields that run "to the end" take the rest of the body.
//! Decoding takes a whole body (as produced by [`crate::FrameDecoder`]) and
//! never panics: every malformed input is a [`DecodeError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{
    CloseReason, RefuseReason, LENGTH_PREFIX_LEN, MAX_PAYLOAD, MAX_RESUME_TOKEN_LEN, MAX_TOKEN_LEN,
};

/// Frame type bytes. Client-to-server types are `0x01..=0x0f`,
/// server-to-client types `0x81..=0x8f`, types both sides send `0x10..=0x1f`.
pub mod kind {
    /// Client → server: the handshake.
    pub const HELLO: u8 = 0x01;
    /// Client → server: an application payload to relay.
    pub const DATA: u8 = 0x02;
    /// Client → server, instead of `HELLO`: ask for the list of rooms.
    pub const LIST_ROOMS: u8 = 0x03;
    /// Either way: are you there?
    pub const PING: u8 = 0x10;
    /// Either way: the answer to a `PING`.
    pub const PONG: u8 = 0x11;
    /// Either way: the sender is closing the connection, and why.
    pub const GOODBYE: u8 = 0x12;
    /// Server → client: the handshake succeeded.
    pub const WELCOME: u8 = 0x81;
    /// Server → client: the handshake was refused.
    pub const REFUSED: u8 = 0x82;
    /// Server → client: a relayed message, stamped with its sender.
    pub const MESSAGE: u8 = 0x83;
    /// Server → client: a member joined the room.
    pub const JOINED: u8 = 0x84;
    /// Server → client: a member left the room.
    pub const LEFT: u8 = 0x85;
    /// Server → client: (part of) the answer to `LIST_ROOMS`.
    pub const ROOM_LIST: u8 = 0x86;
}

/// `HELLO` flag: deliver the client's own messages back to it (the echo).
pub const FLAG_ECHO: u8 = 0x01;
/// `HELLO` flag: a join token follows the room (a `u16` length and that
/// many bytes of ASCII, at most [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN)).
pub const FLAG_TOKEN: u8 = 0x02;
/// `HELLO` flag: the client can resume. A resume token field follows the
/// room (and the join token, if any): a `u8` length and that many bytes of
/// ASCII, at most [`MAX_RESUME_TOKEN_LEN`](crate::MAX_RESUME_TOKEN_LEN); empty
/// on a first join. The server's `WELCOME` then carries a resume token.
pub const FLAG_RESUME: u8 = 0x04;
/// `WELCOME` resume flag: the client took back the seat its token names (the
/// others saw no leave).
pub const FLAG_RESUMED: u8 = 0x01;
/// `ROOM_LIST` flag: more `ROOM_LIST` frames follow this one.
pub const FLAG_MORE: u8 = 0x01;

/// Why a frame body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The type byte is not one this side accepts.
    #[error("unknown or unexpected frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The body ended before a field was complete.
    #[error("frame type 0x{kind:02x} truncated in field `{field}`")]
    Truncated {
        /// The frame type.
        kind: u8,
        /// The field that was cut short.
        field: &'static str,
    },
    /// Bytes remained after the last field of a fixed-layout frame.
    #[error("frame type 0x{kind:02x} has {extra} trailing bytes")]
    TrailingBytes {
        /// The frame type.
        kind: u8,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A text field is not valid UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    PayloadTooLarge(usize),
    /// A join token is longer than [`MAX_TOKEN_LEN`].
    #[error("token of {0} bytes exceeds the maximum of {MAX_TOKEN_LEN}")]
    TokenTooLong(usize),
    /// A resume token is longer than [`MAX_RESUME_TOKEN_LEN`].
    #[error("resume token of {0} bytes exceeds the maximum of {MAX_RESUME_TOKEN_LEN}")]
    ResumeTokenTooLong(usize),
}

/// The handshake a client sends first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// The name to register.
    pub name: String,
    /// The room to join; empty means [`crate::DEFAULT_ROOM`].
    pub room: String,
    /// Whether the client receives its own messages.
    pub echo: bool,
    /// A signed join token, for servers that require one (`FLAG_TOKEN`).
    pub token: Option<String>,
    /// `Some` if the client can resume (`FLAG_RESUME`): the token of the
    /// seat to take back, or empty on a first join.
    pub resume: Option<String>,
}

/// The server's answer to an accepted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version the server speaks.
    pub version: u16,
    /// The largest payload the server relays.
    pub max_payload: u32,
    /// The room actually joined (the default room's name if none was asked).
    pub room: String,
    /// Everyone in the room at the moment of joining, the new client included.
    pub members: Vec<String>,
    /// The resume fields, present exactly when the `HELLO` set `FLAG_RESUME`.
    pub resume: Option<Resume>,
}

/// The resume fields of a `WELCOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Whether this connection took back the seat the `HELLO`'s resume token
    /// named (`FLAG_RESUMED`): same name, no leave seen by the others.
    /// `false` for a fresh join.
    pub resumed: bool,
    /// The token to present to take this seat back after a lost connection
    /// (ASCII, 1 to [`MAX_RESUME_TOKEN_LEN`] bytes). Opaque to clients.
    pub token: String,
}

/// One room in a `ROOM_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// How many members it holds.
    pub members: u32,
}

/// A frame a client sends to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The handshake.
    Hello(Hello),
    /// A payload to relay to the room.
    Data(Bytes),
    /// Ask for the room list (instead of a `HELLO`).
    ListRooms,
    /// Keepalive probe.
    Ping,
    /// Keepalive answer.
    Pong,
    /// The client is closing.
    Goodbye(CloseReason, String),
}

/// A frame the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The handshake was refused; the server closes the connection after it.
    Refused(RefuseReason, String),
    /// A relayed message.
    Message {
        /// The registered name of its sender.
        sender: String,
        /// The payload, as sent.
        payload: Bytes,
    },
    /// A member joined the room.
    Joined(String),
    /// A member left the room.
    Left(String, CloseReason),
    /// Rooms and their member counts; `more` says further frames follow.
    RoomList {
        /// The rooms in this frame.
        rooms: Vec<RoomInfo>,
        /// Whether more `ROOM_LIST` frames follow.
        more: bool,
    },
    /// Keepalive probe.
    Ping,
    /// Keepalive answer.
    Pong,
    /// The server is closing this connection.
    Goodbye(CloseReason, String),
}

/// Encodes a relayed `MESSAGE` frame, length prefix included, in one
/// allocation. The server calls this once per inbound message and shares the
/// result among all recipients.
pub fn encode_message(sender: &str, payload: &[u8]) -> Bytes {
    let sender = short_str(sender);
    let body = 1 + 1 + sender.len() + payload.len();
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_LEN + body);
    buf.put_u32(body as u32);
    buf.put_u8(kind::MESSAGE);
    put_short_str(&mut buf, sender);
    buf.put_slice(payload);
    buf.freeze()
}

/// Encodes a client `DATA` frame, length prefix included, into `dst`.
pub fn encode_data(payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(LENGTH_PREFIX_LEN + 1 + payload.len());
    dst.put_u32(1 + payload.len() as u32);
    dst.put_u8(kind::DATA);
    dst.put_slice(payload);
}

impl ClientFrame {
    /// The frame's type as PROTOCOL.md names it (`HELLO`, `DATA`, ...), for
    /// messages: never the payload, which may be large or binary.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "HELLO",
            Self::Data(_) => "DATA",
            Self::ListRooms => "LIST_ROOMS",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Goodbye(..) => "GOODBYE",
        }
    }

    /// Appends the frame, length prefix included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        if let Self::Data(p) = self {
            return encode_data(p, dst);
        }
        with_prefix(dst, |b| match self {
            Self::Hello(h) => {
                b.put_u8(kind::HELLO);
                b.put_u16(h.version);
                let echo = if h.echo { FLAG_ECHO } else { 0 };
                let token = if h.token.is_some() { FLAG_TOKEN } else { 0 };
                let resume = if h.resume.is_some() { FLAG_RESUME } else { 0 };
                b.put_u8(echo | token | resume);
                put_short_str(b, &h.name);
                put_short_str(b, &h.room);
                if let Some(t) = &h.token {
                    // A token over MAX_TOKEN_LEN is sent (cut at u16::MAX
                    // bytes) for the server to refuse.
                    let t = &t.as_bytes()[..t.len().min(u16::MAX as usize)];
                    b.put_u16(t.len() as u16);
                    b.put_slice(t);
                }
                if let Some(t) = &h.resume {
                    // Over MAX_RESUME_TOKEN_LEN: sent (cut at 255 bytes)
                    // for the server to refuse.
                    put_short_str(b, t);
                }
            }
            Self::Data(_) => unreachable!("handled above"),
            Self::ListRooms => b.put_u8(kind::LIST_ROOMS),
            Self::Ping => b.put_u8(kind::PING),
            Self::Pong => b.put_u8(kind::PONG),
            Self::Goodbye(reason, text) => put_goodbye(b, *reason, text),
        });
    }

    /// The frame as bytes, length prefix included.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes a frame body (type byte first, no length prefix).
    pub fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Fields::new(body)?;
        let frame = match r.kind {
            kind::HELLO => {
                let version = r.u16("version")?;
                let flags = r.u8("flags")?;
                let name = r.short_str("name")?;
                let room = r.short_str("room")?;
                let token = if flags & FLAG_TOKEN != 0 {
                    Some(r.token()?)
                } else {
                    None
                };
                let resume = if flags & FLAG_RESUME != 0 {
                    Some(r.resume_token()?)
                } else {
                    None
                };
                Self::Hello(Hello {
                    version,
                    name,
                    room,
                    echo: flags & FLAG_ECHO != 0,
                    token,
                    resume,
                })
            }
            kind::DATA => Self::Data(r.payload()?),
            kind::LIST_ROOMS => Self::ListRooms,
            kind::PING => Self::Ping,
            kind::PONG => Self::Pong,
            kind::GOODBYE => {
                let (reason, text) = r.goodbye()?;
                Self::Goodbye(reason, text)
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

impl ServerFrame {
    /// The frame's type as PROTOCOL.md names it (`WELCOME`, `MESSAGE`,
    /// ...), for messages: never the payload, which may be large or binary.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "WELCOME",
            Self::Refused(..) => "REFUSED",
            Self::Message { .. } => "MESSAGE",
            Self::Joined(_) => "JOINED",
            Self::Left(..) => "LEFT",
            Self::RoomList { .. } => "ROOM_LIST",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Goodbye(..) => "GOODBYE",
        }
    }

    /// Appends the frame, length prefix included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        with_prefix(dst, |b| match self {
            Self::Welcome(w) => {
                b.put_u8(kind::WELCOME);
                b.put_u16(w.version);
                b.put_u32(w.max_payload);
                put_short_str(b, &w.room);
                b.put_u16(w.members.len() as u16);
                for m in &w.members {
                    put_short_str(b, m);
                }
                if let Some(resume) = &w.resume {
                    b.put_u8(if resume.resumed { FLAG_RESUMED } else { 0 });
                    put_short_str(b, &resume.token);
                }
            }
            Self::Refused(reason, text) => {
                b.put_u8(kind::REFUSED);
                b.put_u8(reason.code());
                b.put_slice(text.as_bytes());
            }
            Self::Message { sender, payload } => {
                b.put_u8(kind::MESSAGE);
                put_short_str(b, sender);
                b.put_slice(payload);
            }
            Self::Joined(name) => {
                b.put_u8(kind::JOINED);
                put_short_str(b, name);
            }
            Self::Left(name, reason) => {
                b.put_u8(kind::LEFT);
                b.put_u8(reason.code());
                put_short_str(b, name);
            }
            Self::RoomList { rooms, more } => {
                b.put_u8(kind::ROOM_LIST);
                b.put_u8(if *more { FLAG_MORE } else { 0 });
                b.put_u16(rooms.len() as u16);
                for room in rooms {
                    put_short_str(b, &room.name);
                    b.put_u32(room.members);
                }
            }
            Self::Ping => b.put_u8(kind::PING),
            Self::Pong => b.put_u8(kind::PONG),
            Self::Goodbye(reason, text) => put_goodbye(b, *reason, text),
        });
    }

    /// The frame as bytes, length prefix included.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes a frame body (type byte first, no length prefix).
    pub fn decode(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Fields::new(body)?;
        let frame = match r.kind {
            kind::WELCOME => {
                let version = r.u16("version")?;
                let max_payload = r.u32("max_payload")?;
                let room = r.short_str("room")?;
                let count = r.u16("member_count")?;
                // Each member takes at least one byte: a count larger than
                // what remains is truncation, caught before allocating.
                if count as usize > r.remaining() {
                    return Err(r.truncated("members"));
                }
                let members = (0..count)
                    .map(|_| r.short_str("members"))
                    .collect::<Result<_, _>>()?;
                // The resume fields follow only if the HELLO asked for them.
                let resume = if r.remaining() > 0 {
                    let resumed = r.u8("resume_flags")? & FLAG_RESUMED != 0;
                    Some(Resume {
                        resumed,
                        token: r.resume_token()?,
                    })
                } else {
                    None
                };
                Self::Welcome(Welcome {
                    version,
                    max_payload,
                    room,
                    members,
                    resume,
                })
            }
            kind::REFUSED => {
                let reason = RefuseReason::from_code(r.u8("code")?);
                Self::Refused(reason, r.rest_str("text")?)
            }
            kind::MESSAGE => {
                let sender = r.short_str("sender")?;
                Self::Message {
                    sender,
                    payload: r.payload()?,
                }
            }
            kind::JOINED => Self::Joined(r.short_str("name")?),
            kind::LEFT => {
                let reason = CloseReason::from_code(r.u8("reason")?);
                Self::Left(r.short_str("name")?, reason)
            }
            kind::ROOM_LIST => {
                let more = r.u8("flags")? & FLAG_MORE != 0;
                let count = r.u16("room_count")?;
                // Each entry takes at least five bytes.
                if count as usize * 5 > r.remaining() {
                    return Err(r.truncated("rooms"));
                }
                let rooms = (0..count)
                    .map(|_| {
                        Ok(RoomInfo {
                            name: r.short_str("rooms")?,
                            members: r.u32("rooms")?,
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Self::RoomList { rooms, more }
            }
            kind::PING => Self::Ping,
            kind::PONG => Self::Pong,
            kind::GOODBYE => {
                let (reason, text) = r.goodbye()?;
                Self::Goodbye(reason, text)
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

/// Writes a frame body produced by `body` behind a 4-byte length prefix.
fn with_prefix(dst: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = dst.len();
    dst.put_u32(0);
    body(dst);
    let len = (dst.len() - start - LENGTH_PREFIX_LEN) as u32;
    dst[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Writes a short string. Names are validated to at most 64 bytes before they
/// get here; a longer string is cut at 255 bytes on a character boundary so
/// the encoding stays well-formed whatever the caller passes.
fn put_short_str(b: &mut BytesMut, s: &str) {
    let s = short_str(s);
    b.put_u8(s.len() as u8);
    b.put_slice(s.as_bytes());
}

/// `s` cut to at most 255 bytes, on a character boundary.
fn short_str(s: &str) -> &str {
    let mut end = s.len().min(u8::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_goodbye(b: &mut BytesMut, reason: CloseReason, text: &str) {
    b.put_u8(kind::GOODBYE);
    b.put_u8(reason.code());
    b.put_slice(text.as_bytes());
}

/// A cursor over the fields of one frame body.
struct Fields {
    kind: u8,
    buf: Bytes,
}

impl Fields {
    fn new(mut body: Bytes) -> Result<Self, DecodeError> {
        if body.is_empty() {
            // The framing layer never yields an empty body; a caller that
            // builds bodies by hand gets a typed error all the same.
            return Err(DecodeError::Truncated {
                kind: 0,
                field: "type",
            });
        }
        let kind = body.get_u8();
        Ok(Self { kind, buf: body })
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            kind: self.kind,
            field,
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.buf.try_get_u8().map_err(|_| self.truncated(field))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.buf.try_get_u16().map_err(|_| self.truncated(field))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.buf.try_get_u32().map_err(|_| self.truncated(field))
    }

    fn short_str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(field)? as usize;
        if self.buf.len() < len {
            return Err(self.truncated(field));
        }
        let raw = self.buf.split_to(len);
        utf8(raw, field)
    }

    /// A `u16`-length token of at most [`MAX_TOKEN_LEN`] ASCII bytes.
    fn token(&mut self) -> Result<String, DecodeError> {
        let len = self.u16("token")? as usize;
        if len > MAX_TOKEN_LEN {
            return Err(DecodeError::TokenTooLong(len));
        }
        self.ascii(len, "token")
    }

    /// A `u8`-length resume token of at most [`MAX_RESUME_TOKEN_LEN`] ASCII
    /// bytes.
    fn resume_token(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u8("resume_token")?);
        if len > MAX_RESUME_TOKEN_LEN {
            return Err(DecodeError::ResumeTokenTooLong(len));
        }
        self.ascii(len, "resume_token")
    }

    /// The next `len` bytes, which must be ASCII (a token's).
    fn ascii(&mut self, len: usize, field: &'static str) -> Result<String, DecodeError> {
        if self.buf.len() < len {
            return Err(self.truncated(field));
        }
        let raw = self.buf.split_to(len);
        if !raw.is_ascii() {
            return Err(DecodeError::InvalidUtf8 { field });
        }
        utf8(raw, field)
    }

    fn rest_str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let raw = std::mem::take(&mut self.buf);
        utf8(raw, field)
    }

    fn payload(&mut self) -> Result<Bytes, DecodeError> {
        if self.buf.len() > MAX_PAYLOAD {
            return Err(DecodeError::PayloadTooLarge(self.buf.len()));
        }
        Ok(std::mem::take(&mut self.buf))
    }

    fn goodbye(&mut self) -> Result<(CloseReason, String), DecodeError> {
        let reason = CloseReason::from_code(self.u8("reason")?);
        Ok((reason, self.rest_str("text")?))
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                kind: self.kind,
                extra: self.buf.len(),
            })
        }
    }
}

fn utf8(raw: Bytes, field: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: Bytes) -> Bytes {
        frame.slice(LENGTH_PREFIX_LEN..)
    }

    #[test]
    fn resume_fields_are_as_documented() {
        let f = ClientFrame::Hello(Hello {
            version: 1,
            name: "al".into(),
            room: "r".into(),
            echo: true,
            token: None,
            resume: Some(String::new()),
        });
        assert_eq!(
            &f.to_bytes()[..],
            b"\x00\x00\x00\x0a\x01\x00\x01\x05\x02al\x01r\x00"
        );
        let f = ClientFrame::Hello(Hello {
            version: 1,
            name: "al".into(),
            room: "r".into(),
            echo: false,
            token: Some("t.k".into()),
            resume: Some("RT".into()),
        });
        let bytes = f.to_bytes();
        assert_eq!(
            &bytes[..],
            b"\x00\x00\x00\x11\x01\x00\x01\x06\x02al\x01r\x00\x03t.k\x02RT"
        );
        assert_eq!(ClientFrame::decode(body(bytes)), Ok(f));
        let w = ServerFrame::Welcome(Welcome {
            version: 1,
            max_payload: 65536,
            room: "r".into(),
            members: vec!["al".into()],
            resume: Some(Resume {
                resumed: true,
                token: "RT".into(),
            }),
        });
        let bytes = w.to_bytes();
        assert_eq!(
            &bytes[..],
            b"\x00\x00\x00\x12\x81\x00\x01\x00\x01\x00\x00\x01r\x00\x01\x02al\x01\x02RT"
        );
        assert_eq!(ServerFrame::decode(body(bytes)), Ok(w));
        // Too long, not ASCII, cut short, or followed by anything: refused.
        let long = "x".repeat(MAX_RESUME_TOKEN_LEN + 1);
        let mut hello = b"\x01\x00\x01\x04\x02al\x01r".to_vec();
        hello.push(long.len() as u8);
        hello.extend_from_slice(long.as_bytes());
        assert_eq!(
            ClientFrame::decode(Bytes::from(hello)),
            Err(DecodeError::ResumeTokenTooLong(65))
        );
        for bad in [
            &b"\x01\x00\x01\x04\x02al\x01r\x01\xc3"[..],
            b"\x01\x00\x01\x04\x02al\x01r\x02R",
            b"\x01\x00\x01\x04\x02al\x01r",
            b"\x01\x00\x01\x04\x02al\x01r\x00\x00",
        ] {
            assert!(ClientFrame::decode(Bytes::copy_from_slice(bad)).is_err());
        }
        assert!(ServerFrame::decode(Bytes::from_static(
            b"\x81\x00\x01\x00\x01\x00\x00\x01r\x00\x01\x02al\x01"
        ))
        .is_err());
    }

    #[test]
    fn hello_bytes_are_as_documented() {
        let f = ClientFrame::Hello(Hello {
            version: 1,
            name: "al".into(),
            room: "r".into(),
            echo: true,
            token: None,
            resume: None,
        });
        assert_eq!(
            &f.to_bytes()[..],
            b"\x00\x00\x00\x09\x01\x00\x01\x01\x02al\x01r"
        );
        let f = ClientFrame::Hello(Hello {
            version: 1,
            name: "al".into(),
            room: "r".into(),
            echo: false,
            token: Some("t.k".into()),
            resume: None,
        });
        let bytes = f.to_bytes();
        assert_eq!(
            &bytes[..],
            b"\x00\x00\x00\x0e\x01\x00\x01\x02\x02al\x01r\x00\x03t.k"
        );
        assert_eq!(ClientFrame::decode(body(bytes)), Ok(f));
    }

    #[test]
    fn token_limits_are_typed_errors() {
        let hello = |len: usize, fill: u8| {
            let mut b = BytesMut::from(&b"\x01\x00\x01\x02\x01a\x00"[..]);
            b.put_u16(len as u16);
            b.put_slice(&vec![fill; len]);
            b.freeze()
        };
        assert!(ClientFrame::decode(hello(MAX_TOKEN_LEN, b'x')).is_ok());
        assert_eq!(
            ClientFrame::decode(hello(MAX_TOKEN_LEN + 1, b'x')),
            Err(DecodeError::TokenTooLong(MAX_TOKEN_LEN + 1))
        );
        assert_eq!(
            ClientFrame::decode(hello(3, 0xc3)),
            Err(DecodeError::InvalidUtf8 { field: "token" })
        );
        let mut cut = BytesMut::from(&hello(10, b'x')[..]);
        cut.truncate(cut.len() - 1);
        assert_eq!(
            ClientFrame::decode(cut.freeze()),
            Err(DecodeError::Truncated {
                kind: kind::HELLO,
                field: "token"
            })
        );
    }

    #[test]
    fn message_bytes_are_as_documented() {
        let m = encode_message("bob", b"hi");
        assert_eq!(&m[..], b"\x00\x00\x00\x07\x83\x03bobhi");
        assert_eq!(
            ServerFrame::decode(body(m)),
            Ok(ServerFrame::Message {
                sender: "bob".into(),
                payload: Bytes::from_static(b"hi")
            })
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert_eq!(
            ClientFrame::decode(Bytes::from_static(b"\x7f")),
            Err(DecodeError::UnknownType(0x7f))
        );
        // A server frame sent to the server is unexpected.
        assert_eq!(
            ClientFrame::decode(Bytes::from_static(b"\x83\x00")),
            Err(DecodeError::UnknownType(0x83))
        );
        assert_eq!(
            ClientFrame::decode(Bytes::from_static(b"\x01\x00\x01\x01\x05al")),
            Err(DecodeError::Truncated {
                kind: kind::HELLO,
                field: "name"
            })
        );
        assert_eq!(
            ClientFrame::decode(Bytes::from_static(b"\x01\x00\x01\x01\x02\xff\xfe\x00")),
            Err(DecodeError::InvalidUtf8 { field: "name" })
        );
        assert_eq!(
            ClientFrame::decode(Bytes::from_static(b"\x10\x00")),
            Err(DecodeError::TrailingBytes {
                kind: kind::PING,
                extra: 1
            })
        );
        // A member count at its type's maximum with nothing behind it.
        assert_eq!(
            ServerFrame::decode(Bytes::from_static(
                b"\x81\x00\x01\x00\x00\x00\x10\x00\xff\xff"
            )),
            Err(DecodeError::Truncated {
                kind: kind::WELCOME,
                field: "members"
            })
        );
        assert_eq!(
            ServerFrame::decode(Bytes::from_static(b"\x86\x00\xff\xff")),
            Err(DecodeError::Truncated {
                kind: kind::ROOM_LIST,
                field: "rooms"
            })
        );
        assert_eq!(
            ClientFrame::decode(Bytes::new()),
            Err(DecodeError::Truncated {
                kind: 0,
                field: "type"
            })
        );
    }

    #[test]
    fn overlong_names_are_cut_and_the_length_prefix_stays_right() {
        let long = "é".repeat(200); // 400 bytes
        let m = encode_message(&long, b"x");
        let decoded = ServerFrame::decode(body(m.clone())).unwrap();
        let expected_sender = "é".repeat(127); // 254 bytes, on a boundary
        assert_eq!(
            decoded,
            ServerFrame::Message {
                sender: expected_sender,
                payload: Bytes::from_static(b"x")
            }
        );
        let prefix = u32::from_be_bytes(m[..4].try_into().unwrap()) as usize;
        assert_eq!(prefix, m.len() - LENGTH_PREFIX_LEN);
    }

    #[test]
    fn payload_limit_is_inclusive() {
        let mut ok = BytesMut::new();
        encode_data(&vec![0u8; MAX_PAYLOAD], &mut ok);
        assert!(ClientFrame::decode(body(ok.freeze())).is_ok());
        let mut too_big = BytesMut::new();
        encode_data(&vec![0u8; MAX_PAYLOAD + 1], &mut too_big);
        assert_eq!(
            ClientFrame::decode(body(too_big.freeze())),
            Err(DecodeError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn largest_frames_fit_the_limits() {
        let max_name = "n".repeat(crate::MAX_NAME_LEN);
        let hello = ClientFrame::Hello(Hello {
            version: 1,
            name: max_name.clone(),
            room: max_name.clone(),
            echo: true,
            token: Some("t".repeat(crate::MAX_TOKEN_LEN)),
            resume: Some("r".repeat(MAX_RESUME_TOKEN_LEN)),
        });
        assert_eq!(
            hello.to_bytes().len(),
            LENGTH_PREFIX_LEN + crate::MAX_HELLO_LEN
        );
        let message = encode_message(&max_name, &vec![0; MAX_PAYLOAD]);
        assert!(message.len() - LENGTH_PREFIX_LEN <= crate::MAX_FRAME_LEN);
        let welcome = ServerFrame::Welcome(Welcome {
            version: 1,
            max_payload: MAX_PAYLOAD as u32,
            room: max_name.clone(),
            members: vec![max_name; crate::MAX_ROOM_MEMBERS],
            resume: Some(Resume {
                resumed: true,
                token: "r".repeat(MAX_RESUME_TOKEN_LEN),
            }),
        });
        assert!(welcome.to_bytes().len() - LENGTH_PREFIX_LEN <= crate::MAX_FRAME_LEN);
    }
}
