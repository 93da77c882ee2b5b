"""The relais wire format (PROTOCOL.md), as pure functions over bytes.

Nothing here touches a socket or a clock. Every frame is a 4-byte big-endian
body length, then the body: one type byte and the type's fields. Decoding is
strict, like the reference implementation: a truncated body, trailing bytes
or invalid UTF-8 in a text field is a :class:`ProtocolViolation`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import List, Optional, Union

VERSION = 1
MAX_PAYLOAD = 64 * 1024
MAX_NAME_LEN = 64
MAX_FRAME_LEN = MAX_PAYLOAD + 256
MAX_TOKEN_LEN = 2048
MAX_RESUME_TOKEN_LEN = 64
MAX_HELLO_LEN = 1 + 2 + 1 + 1 + MAX_NAME_LEN + 1 + MAX_NAME_LEN + 2 + MAX_TOKEN_LEN + 1 + MAX_RESUME_TOKEN_LEN
DEFAULT_ROOM = "lobby"
LENGTH_PREFIX_LEN = 4

# Frame types.
HELLO = 0x01
DATA = 0x02
LIST_ROOMS = 0x03
PING = 0x10
PONG = 0x11
GOODBYE = 0x12
WELCOME = 0x81
REFUSED = 0x82
MESSAGE = 0x83
JOINED = 0x84
LEFT = 0x85
ROOM_LIST = 0x86

FRAME_NAMES = {
    HELLO: "HELLO",
    DATA: "DATA",
    LIST_ROOMS: "LIST_ROOMS",
    PING: "PING",
    PONG: "PONG",
    GOODBYE: "GOODBYE",
    WELCOME: "WELCOME",
    REFUSED: "REFUSED",
    MESSAGE: "MESSAGE",
    JOINED: "JOINED",
    LEFT: "LEFT",
    ROOM_LIST: "ROOM_LIST",
}

# Flags.
FLAG_ECHO = 0x01
FLAG_TOKEN = 0x02
FLAG_RESUME = 0x04
FLAG_RESUMED = 0x01
FLAG_MORE = 0x01


class _CodeEnum(enum.IntEnum):
    """An IntEnum that tolerates codes it does not know (PROTOCOL.md section
    6): ``RefuseReason(99)`` is a member named ``UNKNOWN_99`` whose value
    is 99."""

    @classmethod
    def _missing_(cls, value: object):
        if isinstance(value, int) and 0 <= value <= 255:
            member = int.__new__(cls, value)
            member._name_ = "UNKNOWN_%d" % value
            member._value_ = value
            return member
        return None

    @property
    def known(self) -> bool:
        """Whether this version of the library knows the code."""
        return not self.name.startswith("UNKNOWN_")


class RefuseReason(_CodeEnum):
    """Refusal codes of a ``REFUSED`` frame (PROTOCOL.md section 6.1)."""

    NAME_TAKEN = 1
    INVALID_NAME = 2
    INVALID_ROOM = 3
    UNSUPPORTED_VERSION = 4
    SERVER_FULL = 5
    ROOM_FULL = 6
    TOKEN_REQUIRED = 7
    TOKEN_INVALID = 8
    TOKEN_EXPIRED = 9
    NOT_ALLOWED = 10
    OVERLOADED = 11
    TOO_MANY_CONNECTIONS = 12
    TOO_MANY_JOINS = 13
    RESUME_INVALID = 14
    CLUSTER_UNAVAILABLE = 15

    def describe(self) -> str:
        return _REFUSE_TEXT.get(self.value, "refused (code %d)" % self.value)


_REFUSE_TEXT = {
    1: "name taken",
    2: "invalid name",
    3: "invalid room name",
    4: "unsupported protocol version",
    5: "server full",
    6: "room full",
    7: "token required",
    8: "invalid token",
    9: "token expired",
    10: "not allowed by token",
    11: "server overloaded",
    12: "too many connections from this address",
    13: "too many joins from this address",
    14: "resume token invalid",
    15: "cluster unavailable",
}


class CloseReason(_CodeEnum):
    """Close and leave reasons of ``GOODBYE`` and ``LEFT`` (PROTOCOL.md
    section 6.2), plus :attr:`LEFT_WHILE_AWAY`, which no server sends."""

    NORMAL = 0
    SERVER_SHUTDOWN = 1
    SLOW_CONSUMER = 2
    TIMEOUT = 3
    RATE_LIMIT = 4
    PROTOCOL_ERROR = 5
    CONNECTION_LOST = 6
    READ_ONLY = 7
    #: Reported by the client itself, never by a server: the member was in
    #: the room before a reconnect and is not any more; why it left is unknown.
    LEFT_WHILE_AWAY = 255

    def describe(self) -> str:
        return _CLOSE_TEXT.get(self.value, "closed (code %d)" % self.value)


_CLOSE_TEXT = {
    0: "left",
    1: "server shutting down",
    2: "slow consumer",
    3: "timed out",
    4: "rate limit",
    5: "protocol error",
    6: "connection lost",
    7: "read only",
    255: "left while this client was away",
}


class ProtocolViolation(Exception):
    """Bytes from the server that break the protocol."""


# --- Frames the server sends, decoded ---------------------------------------


@dataclass(frozen=True)
class Welcome:
    version: int
    max_payload: int
    room: str
    members: List[str]
    #: ``None`` when the WELCOME has no resume fields (the HELLO did not set
    #: FLAG_RESUME, or the server does not support resume yet).
    resumed: Optional[bool] = None
    resume_token: Optional[str] = None


@dataclass(frozen=True)
class Refused:
    reason: RefuseReason
    text: str


@dataclass(frozen=True)
class MessageFrame:
    sender: str
    payload: bytes


@dataclass(frozen=True)
class JoinedFrame:
    name: str


@dataclass(frozen=True)
class LeftFrame:
    name: str
    reason: CloseReason


@dataclass(frozen=True)
class RoomInfo:
    """One room of :func:`relais.list_rooms`: its name and member count."""

    name: str
    members: int


@dataclass(frozen=True)
class RoomListFrame:
    rooms: List[RoomInfo]
    more: bool


@dataclass(frozen=True)
class Goodbye:
    reason: CloseReason
    text: str


class _Ping:
    def __repr__(self) -> str:
        return "PING"


class _Pong:
    def __repr__(self) -> str:
        return "PONG"


PING_FRAME = _Ping()
PONG_FRAME = _Pong()

ServerFrame = Union[
    Welcome, Refused, MessageFrame, JoinedFrame, LeftFrame, RoomListFrame, Goodbye, _Ping, _Pong
]


# --- Encoding -----------------------------------------------------------------


def _prefixed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _short_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("a short string holds at most 255 bytes, not %d" % len(raw))
    return bytes((len(raw),)) + raw


def encode_hello(
    name: str,
    room: str = "",
    echo: bool = True,
    token: Optional[str] = None,
    resume: Optional[str] = None,
    version: int = VERSION,
) -> bytes:
    """A whole ``HELLO`` frame. ``resume`` is ``None`` (no FLAG_RESUME), or
    the resume token to present ("" on a first join)."""
    flags = (FLAG_ECHO if echo else 0) | (FLAG_TOKEN if token is not None else 0)
    flags |= FLAG_RESUME if resume is not None else 0
    body = bytearray((HELLO,))
    body += struct.pack(">HB", version, flags)
    body += _short_str(name)
    body += _short_str(room)
    if token is not None:
        raw = token.encode("ascii")
        body += struct.pack(">H", len(raw)) + raw
    if resume is not None:
        raw = resume.encode("ascii")
        if len(raw) > MAX_RESUME_TOKEN_LEN:
            raise ValueError("resume token longer than %d bytes" % MAX_RESUME_TOKEN_LEN)
        body += bytes((len(raw),)) + raw
    return _prefixed(bytes(body))


def encode_data(payload: bytes) -> bytes:
    return struct.pack(">IB", 1 + len(payload), DATA) + payload


def encode_goodbye(reason: int = 0, text: str = "") -> bytes:
    return _prefixed(bytes((GOODBYE, int(reason))) + text.encode("utf-8"))


PING_BYTES = b"\x00\x00\x00\x01\x10"
PONG_BYTES = b"\x00\x00\x00\x01\x11"
LIST_ROOMS_BYTES = b"\x00\x00\x00\x01\x03"
GOODBYE_NORMAL_BYTES = b"\x00\x00\x00\x02\x12\x00"


# --- Framing ------------------------------------------------------------------


class FrameDecoder:
    """Splits a byte stream into frame bodies: :meth:`feed` bytes as they
    come, take whole bodies from :meth:`frames`. The announced length is
    checked (0, or above ``max_frame_len``, is a violation) before the body
    is waited for."""

    def __init__(self, max_frame_len: int = MAX_FRAME_LEN) -> None:
        self.max_frame_len = max_frame_len
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame: nonzero at end of stream means the
        stream ended inside a frame."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Optional[bytes]:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < LENGTH_PREFIX_LEN:
            return None
        (length,) = struct.unpack_from(">I", buf, pos)
        if length > self.max_frame_len:
            raise ProtocolViolation(
                "frame of %d bytes exceeds the maximum of %d" % (length, self.max_frame_len)
            )
        if length == 0:
            raise ProtocolViolation("empty frame")
        start = pos + LENGTH_PREFIX_LEN
        end = start + length
        if len(buf) < end:
            return None
        self._pos = end
        return bytes(buf[start:end])

    def frames(self):
        """Every whole frame body buffered, in order."""
        while True:
            body = self.next_frame()
            if body is None:
                return
            yield body


# --- Decoding -----------------------------------------------------------------


class _Fields:
    __slots__ = ("kind", "buf", "pos")

    def __init__(self, body: bytes) -> None:
        if not body:
            raise ProtocolViolation("empty frame body")
        self.kind = body[0]
        self.buf = body
        self.pos = 1

    def _frame(self) -> str:
        return FRAME_NAMES.get(self.kind, "0x%02x" % self.kind)

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def _take(self, n: int, field: str) -> bytes:
        if self.remaining() < n:
            raise ProtocolViolation("%s frame truncated in field `%s`" % (self._frame(), field))
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw

    def u8(self, field: str) -> int:
        return self._take(1, field)[0]

    def u16(self, field: str) -> int:
        return struct.unpack(">H", self._take(2, field))[0]

    def u32(self, field: str) -> int:
        return struct.unpack(">I", self._take(4, field))[0]

    def _utf8(self, raw: bytes, field: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(
                "%s field `%s` is not valid UTF-8" % (self._frame(), field)
            ) from None

    def short_str(self, field: str) -> str:
        n = self.u8(field)
        return self._utf8(self._take(n, field), field)

    def rest(self) -> bytes:
        raw = self.buf[self.pos :]
        self.pos = len(self.buf)
        return raw

    def rest_str(self, field: str) -> str:
        return self._utf8(self.rest(), field)

    def finish(self) -> None:
        if self.remaining():
            raise ProtocolViolation(
                "%s frame has %d trailing bytes" % (self._frame(), self.remaining())
            )


def decode_server_frame(body: bytes) -> ServerFrame:
    """Decodes a server frame body (type byte first, no length prefix)."""
    r = _Fields(body)
    kind = r.kind
    frame: ServerFrame
    if kind == MESSAGE:
        sender = r.short_str("sender")
        payload = r.rest()
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolViolation("payload of %d bytes exceeds the maximum" % len(payload))
        frame = MessageFrame(sender, payload)
    elif kind == PING:
        frame = PING_FRAME
    elif kind == PONG:
        frame = PONG_FRAME
    elif kind == JOINED:
        frame = JoinedFrame(r.short_str("name"))
    elif kind == LEFT:
        reason = CloseReason(r.u8("reason"))
        frame = LeftFrame(r.short_str("name"), reason)
    elif kind == WELCOME:
        version = r.u16("version")
        max_payload = r.u32("max_payload")
        room = r.short_str("room")
        count = r.u16("member_count")
        if count > r.remaining():
            raise ProtocolViolation("WELCOME frame truncated in field `members`")
        members = [r.short_str("members") for _ in range(count)]
        resumed = token = None
        if r.remaining():
            resumed = bool(r.u8("resume_flags") & FLAG_RESUMED)
            raw = r._take(r.u8("resume_token"), "resume_token")
            if len(raw) > MAX_RESUME_TOKEN_LEN or not raw.isascii():
                raise ProtocolViolation("WELCOME carries an invalid resume token")
            token = raw.decode("ascii")
        frame = Welcome(version, max_payload, room, members, resumed, token)
    elif kind == REFUSED:
        reason = RefuseReason(r.u8("code"))
        frame = Refused(reason, r.rest_str("text"))
    elif kind == GOODBYE:
        reason = CloseReason(r.u8("reason"))
        frame = Goodbye(reason, r.rest_str("text"))
    elif kind == ROOM_LIST:
        more = bool(r.u8("flags") & FLAG_MORE)
        count = r.u16("room_count")
        if count * 5 > r.remaining():
            raise ProtocolViolation("ROOM_LIST frame truncated in field `rooms`")
        rooms = []
        for _ in range(count):
            name = r.short_str("rooms")
            rooms.append(RoomInfo(name, r.u32("rooms")))
        frame = RoomListFrame(rooms, more)
    else:
        raise ProtocolViolation("unknown or unexpected frame type 0x%02x" % kind)
    r.finish()
    return frame


def frame_name(frame: ServerFrame) -> str:
    """The type name of a decoded frame, for error messages."""
    return {
        Welcome: "WELCOME",
        Refused: "REFUSED",
        MessageFrame: "MESSAGE",
        JoinedFrame: "JOINED",
        LeftFrame: "LEFT",
        RoomListFrame: "ROOM_LIST",
        Goodbye: "GOODBYE",
        _Ping: "PING",
        _Pong: "PONG",
    }.get(type(frame), "?")
