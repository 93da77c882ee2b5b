"""Exceptions, mirroring the Rust client's error types (``ConnectError``,
``Disconnect``)."""

from __future__ import annotations

import enum
from typing import Optional

from .protocol import CloseReason, RefuseReason


class RelaisError(Exception):
    """Base class of every error this package raises."""


class ConnectError(RelaisError):
    """Connecting failed: resolving, the TCP connection, TLS or the handshake
    (the server closed or answered nonsense). ``__cause__`` holds the
    underlying exception, if any."""


class ConnectTimeout(ConnectError, TimeoutError):
    """The TCP connection and handshake did not complete within the connect
    timeout."""


class Refused(ConnectError):
    """The server refused the handshake (a ``REFUSED`` frame).

    ``reason`` is a :class:`RefuseReason` (an ``IntEnum``; codes this
    version does not know are members named ``UNKNOWN_<code>``), ``code``
    the number and ``text`` the server's human-readable explanation.
    """

    def __init__(self, reason: RefuseReason, text: str = "") -> None:
        self.reason = RefuseReason(reason)
        self.code = int(reason)
        self.text = text
        super().__init__(
            "refused by the server (%s, code %d): %s"
            % (self.reason.describe(), self.code, text or "-")
        )

    def __reduce__(self):
        return (type(self), (self.reason, self.text))


class InvalidName(ConnectError, ValueError):
    """The client name breaks the naming rule; nothing was sent.
    ``problem`` says why, in the server's words."""

    def __init__(self, problem: str, name: object = None) -> None:
        self.problem = problem
        self.name = name
        super().__init__("invalid %s %r: %s" % (self._what, name, problem))

    def __reduce__(self):
        return (type(self), (self.problem, self.name))

    _what = "client name"


class InvalidRoom(InvalidName):
    """The room name breaks the naming rule; nothing was sent."""

    _what = "room name"


class InvalidToken(ConnectError, ValueError):
    """The join token is not ASCII or longer than 2,048 bytes; nothing was
    sent."""


class DisconnectKind(str, enum.Enum):
    """Why a connection ended, as :attr:`Disconnected.kind`."""

    #: The application closed the client.
    CLOSED = "closed"
    #: The server said ``GOODBYE`` (its reason is :attr:`Disconnected.reason`).
    GOODBYE = "goodbye"
    #: Nothing came from the server for three keepalive intervals.
    TIMEOUT = "timeout"
    #: The connection failed or ended without a ``GOODBYE``.
    CONNECTION_LOST = "connection_lost"
    #: The server sent bytes that break the protocol.
    PROTOCOL = "protocol"
    #: A reconnect was refused for good (:attr:`Disconnected.refusal`).
    REFUSED = "refused"


class Disconnected(RelaisError):
    """The connection has ended for good (the client is ``closed``).

    Raised by ``send`` and ``recv`` once everything received before the end
    has been taken. ``kind`` is a :class:`DisconnectKind`; ``reason`` the
    :class:`CloseReason` of a server ``GOODBYE`` (else ``None``);
    ``refusal`` the :class:`RefuseReason` of a final refusal while
    reconnecting (else ``None``); ``message`` the detail.
    """

    def __init__(
        self,
        kind: DisconnectKind,
        message: str = "",
        reason: Optional[CloseReason] = None,
        refusal: Optional[RefuseReason] = None,
    ) -> None:
        self.kind = DisconnectKind(kind)
        self.message = message
        self.reason = None if reason is None else CloseReason(reason)
        self.refusal = None if refusal is None else RefuseReason(refusal)
        super().__init__(self._describe())

    def _describe(self) -> str:
        k = self.kind
        if k is DisconnectKind.CLOSED:
            text = "closed by the client"
        elif k is DisconnectKind.GOODBYE:
            assert self.reason is not None
            text = "the server closed the connection (%s, code %d)" % (
                self.reason.describe(),
                self.reason,
            )
        elif k is DisconnectKind.TIMEOUT:
            text = "the server stopped answering keepalive pings"
        elif k is DisconnectKind.REFUSED:
            assert self.refusal is not None
            text = "reconnecting was refused (%s, code %d)" % (
                self.refusal.describe(),
                self.refusal,
            )
        elif k is DisconnectKind.PROTOCOL:
            text = "protocol error"
        else:
            text = "connection lost"
        return "%s: %s" % (text, self.message) if self.message else text

    def with_message(self, message: str) -> "Disconnected":
        """The same disconnect with another message."""
        return Disconnected(self.kind, message, self.reason, self.refusal)

    def copy(self) -> "Disconnected":
        """A fresh exception object saying the same (to raise again)."""
        e = self.with_message(self.message)
        e.__cause__ = self.__cause__
        return e

    def __reduce__(self):
        return (Disconnected, (self.kind, self.message, self.reason, self.refusal))


class PayloadTooLarge(RelaisError, ValueError):
    """``send`` was given a payload larger than the server relays; nothing
    was queued."""
