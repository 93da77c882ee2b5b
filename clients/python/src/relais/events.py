"""What a client hands to the application: events, its state, its counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .protocol import CloseReason


@dataclass(frozen=True)
class Message:
    """A payload relayed by the server. ``sender`` is the registered name of
    the member that sent it, stamped by the server."""

    sender: str
    payload: bytes

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (invalid bytes replaced)."""
        return self.payload.decode("utf-8", "replace")


@dataclass(frozen=True)
class Joined:
    """A member joined the room (or, after a reconnect, is in the room and
    was not before)."""

    name: str


@dataclass(frozen=True)
class Left:
    """A member left the room. ``reason`` is a :class:`CloseReason`:
    ``NORMAL`` when it left on purpose, ``LEFT_WHILE_AWAY`` (255) when it
    was gone from the member list this client got on reconnecting."""

    name: str
    reason: CloseReason


class State(str, enum.Enum):
    """A client's connection state (equal to its lowercase string)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass
class Stats:
    """Counters of a client, from ``client.stats`` (a snapshot)."""

    #: Payloads written to the connection.
    sent: int = 0
    #: Messages received from the server.
    received: int = 0
    #: Queued payloads dropped, oldest first, because the send queue was full.
    dropped_outbound: int = 0
    #: Received events dropped, oldest first, because the receive queue was full.
    dropped_inbound: int = 0
    #: ``PING`` frames this client sent after silence from the server.
    pings_sent: int = 0
    #: ``PONG`` frames this client sent, answering the server's ``PING``.
    pongs_sent: int = 0
    #: Connections made after the first (resumed or fresh).
    reconnects: int = 0
    #: Reconnects that took the seat back (``WELCOME`` with RESUMED).
    resumes: int = 0
    #: Resume tokens the server refused (``REFUSED`` 14), each followed by a
    #: fresh join.
    resume_refusals: int = 0
