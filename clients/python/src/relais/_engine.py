"""The connection engine both APIs share: one asyncio protocol per TCP
connection, keepalive, the send queue and reconnect with resume.

The engine runs on an asyncio event loop: the application's (``relais.aio``)
or a private one in a background thread (``relais.Client``). What the
application reads from other threads (state, members, counters, the send
queue) is guarded by one lock; events go to a :class:`Inbox`, which knows
how its reader waits (a condition variable or futures).
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Deque, List, Optional, Union

from . import protocol as p
from .errors import (
    ConnectError,
    ConnectTimeout,
    Disconnected,
    DisconnectKind,
    InvalidToken,
    PayloadTooLarge,
    Refused,
)
from .events import Joined, Left, Message, State, Stats
from .names import validate_name, validate_room
from .protocol import CloseReason, RefuseReason

Event = Union[Message, Joined, Left]

#: Consecutive silent keepalive intervals after which the server is
#: declared gone: the first two each send a ``PING``, the third gives up.
SILENT_INTERVALS_LIMIT = 3

#: How long ``close`` lets queued payloads and the goodbye go out, then how
#: long it waits for the server's goodbye.
CLOSE_FLUSH_TIMEOUT = 1.0

#: Refusals after which reconnecting goes on (with backoff); any other
#: refusal ends the client.
RETRYABLE_REFUSALS = frozenset(
    {
        RefuseReason.NAME_TAKEN,  # the old seat's ghost, on a server without resume
        RefuseReason.SERVER_FULL,
        RefuseReason.ROOM_FULL,
        RefuseReason.OVERLOADED,
        RefuseReason.TOO_MANY_CONNECTIONS,
        RefuseReason.TOO_MANY_JOINS,
        RefuseReason.RESUME_INVALID,
        RefuseReason.CLUSTER_UNAVAILABLE,  # a cluster node cut off from NATS
    }
)

#: Server goodbyes after which the client reconnects (a restart, a
#: keepalive drop; 2 and 6 are never sent but mean a lost connection).
RETRYABLE_GOODBYES = frozenset(
    {
        CloseReason.SERVER_SHUTDOWN,
        CloseReason.SLOW_CONSUMER,
        CloseReason.TIMEOUT,
        CloseReason.CONNECTION_LOST,
    }
)

#: Bytes of payloads handed to the transport at once before checking
#: whether it asked to pause (so that a backlog waits, drop-oldest, in the
#: bounded send queue rather than in the transport's buffer).
WRITE_BATCH_BYTES = 64 * 1024


def tls_context(tls: Union[None, bool, ssl.SSLContext]) -> Optional[ssl.SSLContext]:
    """The ``tls`` argument as a context: ``True`` is
    :func:`ssl.create_default_context`, ``None`` or ``False`` plain TCP."""
    if tls is True:
        return ssl.create_default_context()
    if tls is False:
        return None
    return tls


def room_list_frame(body: bytes, rooms: List[p.RoomInfo]) -> bool:
    """Adds a ``ROOM_LIST`` frame's rooms to ``rooms``; True if it was the
    last. Raises on a refusal or anything else."""
    try:
        frame = p.decode_server_frame(body)
    except p.ProtocolViolation as e:
        raise ConnectError("protocol error: %s" % e) from None
    if isinstance(frame, p.RoomListFrame):
        rooms.extend(frame.rooms)
        return not frame.more
    if isinstance(frame, p.Refused):
        raise Refused(frame.reason, frame.text)
    if isinstance(frame, p.Goodbye):
        raise ConnectError(
            "the server said GOODBYE %d (%s): %s"
            % (frame.reason, frame.reason.describe(), frame.text)
        )
    raise ConnectError("expected ROOM_LIST, got %s" % p.frame_name(frame))


@dataclass(frozen=True)
class Options:
    """Tuning shared by both APIs (see ``Client.connect`` for each)."""

    connect_timeout: float = 5.0
    keepalive: Optional[float] = 10.0
    reconnect: bool = True
    reconnect_window: float = 60.0
    outbound_capacity: int = 1024
    inbound_capacity: int = 4096
    backoff_initial: float = 0.1
    backoff_max: float = 5.0

    def checked(self) -> "Options":
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        if self.keepalive is not None and self.keepalive < 0:
            raise ValueError("keepalive must be positive, or 0/None for off")
        if self.reconnect_window < 0:
            raise ValueError("reconnect_window must be >= 0 (0: never reconnect)")
        if self.outbound_capacity < 1 or self.inbound_capacity < 1:
            raise ValueError("queue capacities must be at least 1")
        if not self.reconnect:
            return replace(self, reconnect_window=0.0)
        return self


class Inbox:
    """The received events, bounded, dropping the oldest when full, plus
    the end of the connection. Subclasses say how a reader waits."""

    def __init__(self, capacity: int) -> None:
        self._events: Deque[Event] = deque()
        self._capacity = capacity
        self.dropped = 0
        self.error: Optional[Disconnected] = None

    # Called on the engine's loop, with the subclass's lock held by
    # ``push``/``end``/``changed``.
    def _append(self, event: Event) -> None:
        if len(self._events) >= self._capacity:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)

    def _take_now(self, messages_only: bool) -> Optional[Event]:
        """The next event, or None if none waits; once none waits and the
        connection has ended, raises its end."""
        events = self._events
        while events:
            event = events.popleft()
            if not messages_only or isinstance(event, Message):
                return event
        if self.error is not None:
            raise self.error.copy()
        return None

    def push(self, event: Event) -> None:
        raise NotImplementedError

    def end(self, error: Disconnected) -> None:
        raise NotImplementedError

    def changed(self) -> None:
        """The state changed: wake whoever waits for one."""
        raise NotImplementedError


class ThreadInbox(Inbox):
    """For ``relais.Client``: readers are other threads."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.cond = threading.Condition()

    def push(self, event: Event) -> None:
        with self.cond:
            self._append(event)
            self.cond.notify_all()

    def end(self, error: Disconnected) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()

    def changed(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def poll(self, messages_only: bool) -> Optional[Event]:
        with self.cond:
            return self._take_now(messages_only)

    def take(self, messages_only: bool, timeout: Optional[float]) -> Event:
        with self.cond:
            deadline = None if timeout is None else _now() + timeout
            while True:
                event = self._take_now(messages_only)
                if event is not None:
                    return event
                if deadline is None:
                    self.cond.wait()
                else:
                    left = deadline - _now()
                    if left <= 0:
                        raise TimeoutError("nothing received within %.3g s" % timeout)
                    self.cond.wait(left)

    def wait_for(self, predicate: Callable[[], bool], timeout: Optional[float]) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


class AsyncInbox(Inbox):
    """For ``relais.aio``: readers are coroutines on the engine's loop."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._waiters: List[asyncio.Future] = []

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def push(self, event: Event) -> None:
        self._append(event)
        self._wake()

    def end(self, error: Disconnected) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def changed(self) -> None:
        self._wake()

    def poll(self, messages_only: bool) -> Optional[Event]:
        return self._take_now(messages_only)

    async def _wait(self, deadline: Optional[float]) -> bool:
        """Waits for a change until ``deadline`` (loop time); False if it
        passed."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            if deadline is None:
                await waiter
            else:
                left = deadline - loop.time()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(waiter, left)
                except asyncio.TimeoutError:
                    return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    async def take(self, messages_only: bool, timeout: Optional[float]) -> Event:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            event = self._take_now(messages_only)
            if event is not None:
                return event
            if not await self._wait(deadline):
                raise TimeoutError("nothing received within %.3g s" % timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: Optional[float]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            if not await self._wait(deadline):
                return predicate()
        return True


_now = time.monotonic


class _HandshakeEnd(ConnectError):
    """The server said GOODBYE or closed instead of answering the HELLO."""

    def __init__(self, message: str, goodbye: Optional[CloseReason] = None) -> None:
        super().__init__(message)
        self.goodbye = goodbye


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: the handshake, then frames until it
    ends. It reports to its :class:`Engine`."""

    def __init__(self, engine: "Engine", hello: bytes) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.hello = hello
        self.transport: Optional[asyncio.Transport] = None
        self.decoder = p.FrameDecoder(p.MAX_FRAME_LEN)
        self.welcomed = False
        #: Resolved with the WELCOME, or failed with a ConnectError.
        self.handshake: asyncio.Future = self.loop.create_future()
        #: Resolved with why the connection ended, once it has.
        self.done: asyncio.Future = self.loop.create_future()
        #: Why it is ending, once known (a GOODBYE, a violation, a timeout).
        self.end_reason: Optional[Disconnected] = None
        self.paused = False
        self.last_heard = self.loop.time()
        self.silent_intervals = 0
        self._keepalive: Optional[asyncio.TimerHandle] = None

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        transport.write(self.hello)

    def data_received(self, data: bytes) -> None:
        if self.end_reason is not None:
            return
        self.last_heard = self.loop.time()
        self.silent_intervals = 0
        if not self.welcomed and self.decoder.buffered == 0 and data[:2] == b"\x15\x03":
            # A TLS alert record: a plaintext client on a TLS port.
            self._fail_handshake(
                ConnectError(
                    "the server speaks TLS on this port (it answered with a TLS alert): "
                    "connect with tls=..."
                )
            )
            return
        self.decoder.feed(data)
        try:
            for body in self.decoder.frames():
                frame = p.decode_server_frame(body)
                if self.welcomed:
                    self._frame(frame)
                else:
                    self._handshake_frame(frame)
                if self.end_reason is not None:
                    return
        except p.ProtocolViolation as e:
            self._fail(Disconnected(DisconnectKind.PROTOCOL, str(e)), abort=True)

    def eof_received(self) -> bool:
        if self.end_reason is None:
            if self.decoder.buffered:
                # A server that drops a slow consumer closes mid-frame: a
                # lost connection, not a protocol error.
                text = "stream ended inside a frame (%d bytes buffered)" % self.decoder.buffered
            else:
                text = "the server closed the connection without a goodbye"
            self._fail(Disconnected(DisconnectKind.CONNECTION_LOST, text), abort=False)
        return False  # the transport closes itself

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._stop_keepalive()
        if self.end_reason is None:
            text = str(exc) if exc else "connection closed"
            self.end_reason = Disconnected(DisconnectKind.CONNECTION_LOST, text)
        reason = self.end_reason
        if not self.handshake.done():
            self.handshake.set_exception(
                _HandshakeEnd(
                    "the server closed the connection during the handshake (%s)" % reason.message
                )
            )
        if not self.done.done():
            self.done.set_result(reason)
        if self.welcomed:
            self.engine._connection_ended(self, reason)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.engine._flush()

    # --- frames -------------------------------------------------------------

    def _handshake_frame(self, frame: p.ServerFrame) -> None:
        if isinstance(frame, p.Welcome):
            if frame.version != p.VERSION:
                self._fail_handshake(
                    ConnectError("the server speaks protocol version %d, not 1" % frame.version)
                )
                return
            self.welcomed = True
            self.engine._welcomed(self, frame)
            self._schedule_keepalive(self.engine.keepalive)
            if not self.handshake.done():
                self.handshake.set_result(frame)
        elif isinstance(frame, p.Refused):
            self._fail_handshake(Refused(frame.reason, frame.text), abort=False)
        elif isinstance(frame, p.Goodbye):
            self._fail_handshake(
                _HandshakeEnd(
                    "the server closed the connection during the handshake "
                    "(GOODBYE %d, %s): %s" % (frame.reason, frame.reason.describe(), frame.text),
                    goodbye=frame.reason,
                ),
                abort=False,
            )
        else:
            self._fail_handshake(
                ConnectError(
                    "protocol error during the handshake: expected WELCOME, got %s"
                    % p.frame_name(frame)
                )
            )

    def _frame(self, frame: p.ServerFrame) -> None:
        engine = self.engine
        if isinstance(frame, p.MessageFrame):
            engine._received(Message(frame.sender, frame.payload))
        elif frame is p.PING_FRAME:
            self._write(p.PONG_BYTES)
            engine._count("pongs_sent")
        elif frame is p.PONG_FRAME:
            pass  # any byte already reset the keepalive count
        elif isinstance(frame, p.JoinedFrame):
            engine._member_joined(frame.name)
        elif isinstance(frame, p.LeftFrame):
            engine._member_left(frame.name, frame.reason)
        elif isinstance(frame, p.Goodbye):
            self._fail(
                Disconnected(DisconnectKind.GOODBYE, frame.text, reason=frame.reason),
                abort=False,
            )
        else:
            self._fail(
                Disconnected(
                    DisconnectKind.PROTOCOL,
                    "unexpected %s frame after the handshake" % p.frame_name(frame),
                ),
                abort=True,
            )

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- ending -------------------------------------------------------------

    def _fail(self, reason: Disconnected, abort: bool) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if not self.handshake.done():
            self.handshake.set_exception(
                _HandshakeEnd("the connection ended during the handshake: %s" % reason)
            )
        self._stop_keepalive()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _fail_handshake(self, error: ConnectError, abort: bool = True) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(error)
        self._fail(Disconnected(DisconnectKind.CONNECTION_LOST, str(error)), abort=abort)

    def abort(self) -> None:
        """Drops the connection at once (no goodbye)."""
        if self.end_reason is None:
            self.end_reason = Disconnected(DisconnectKind.CONNECTION_LOST, "aborted")
        if self.transport is not None:
            self.transport.abort()

    # --- keepalive ----------------------------------------------------------

    def _schedule_keepalive(self, interval: Optional[float]) -> None:
        if interval:
            self._keepalive = self.loop.call_at(
                self.last_heard + interval, self._keepalive_check, interval
            )

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _keepalive_check(self, interval: float) -> None:
        self._keepalive = None
        if self.end_reason is not None:
            return
        now = self.loop.time()
        quiet_until = self.last_heard + interval
        if quiet_until > now:
            self._keepalive = self.loop.call_at(quiet_until, self._keepalive_check, interval)
            return
        self.silent_intervals += 1
        if self.silent_intervals >= SILENT_INTERVALS_LIMIT:
            self._fail(
                Disconnected(
                    DisconnectKind.TIMEOUT,
                    "nothing from the server for %.3g s" % (now - self.last_heard),
                ),
                abort=True,
            )
            return
        self._write(p.PING_BYTES)
        self.engine._count("pings_sent")
        self._keepalive = self.loop.call_at(now + interval, self._keepalive_check, interval)


class Engine:
    """A client's whole life: connections, reconnects, queues, state."""

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        room: Optional[str],
        echo: bool,
        token: Optional[str],
        tls: Union[None, bool, ssl.SSLContext],
        options: Options,
        inbox: Inbox,
        loop: asyncio.AbstractEventLoop,
        threadsafe: bool,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.name = validate_name(name)
        self.room_asked = validate_room(room)
        self.echo = bool(echo)
        if token is not None:
            if not isinstance(token, str) or not token.isascii():
                raise InvalidToken("join token is not ASCII")
            if len(token) > p.MAX_TOKEN_LEN:
                raise InvalidToken(
                    "join token of %d bytes exceeds the maximum of %d"
                    % (len(token), p.MAX_TOKEN_LEN)
                )
        self.token = token
        self.tls = tls_context(tls)
        self.options = options.checked()
        self.keepalive = self.options.keepalive or None
        self.inbox = inbox
        self.loop = loop
        self._call_soon = loop.call_soon_threadsafe if threadsafe else loop.call_soon

        self.lock = threading.Lock()
        # Guarded by `lock` (read by application threads):
        self._outbound: Deque[bytes] = deque()
        self._flush_scheduled = False
        self._members: List[str] = []
        self._state = State.CONNECTING
        self._closing = False
        self._stats = Stats()
        self.room: Optional[str] = None
        self.max_payload = p.MAX_PAYLOAD
        self.resumed = False

        self._resume_token: Optional[str] = None
        self._conn: Optional[Connection] = None
        self._attempt: Optional[Connection] = None
        self._reconnecting: Optional[asyncio.Task] = None
        self._ever_welcomed = False
        self._closed = asyncio.Event() if not threadsafe else None

    # --- what the application reads -----------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def members(self) -> List[str]:
        with self.lock:
            return list(self._members)

    @property
    def stats(self) -> Stats:
        with self.lock:
            s = replace(self._stats)
        s.dropped_inbound = self.inbox.dropped
        return s

    @property
    def error(self) -> Optional[Disconnected]:
        return self.inbox.error

    def send(self, payload: Union[bytes, bytearray, memoryview, str]) -> None:
        """Queues a payload; never blocks. Called from any thread in
        threadsafe mode, else from the loop."""
        if isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = bytes(payload)
        if len(data) > self.max_payload:
            raise PayloadTooLarge(
                "payload of %d bytes exceeds the maximum of %d" % (len(data), self.max_payload)
            )
        with self.lock:
            if self._state is State.CLOSED or self._closing:
                error = self.inbox.error
                raise error.copy() if error else Disconnected(DisconnectKind.CLOSED)
            if len(self._outbound) >= self.options.outbound_capacity:
                self._outbound.popleft()
                self._stats.dropped_outbound += 1
            self._outbound.append(data)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._call_soon(self._flush)

    def test_socket(self):
        """The current connection's socket (tests drop it to simulate a
        lost connection), or None."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return None
        return conn.transport.get_extra_info("socket")

    # --- connecting ---------------------------------------------------------

    async def connect_first(self) -> None:
        """The first connection; raises ConnectError (and the client is
        closed) if it fails."""
        try:
            await self._open(self.options.connect_timeout)
        except BaseException as e:
            err = Disconnected(DisconnectKind.CONNECTION_LOST, "connect failed: %s" % e)
            self._set_state(State.CLOSED, err)
            raise

    def _hello(self) -> bytes:
        # FLAG_RESUME always when this client reconnects (an empty token on
        # a fresh join); never when it does not: a server would park the
        # seat of a lost connection for nothing, hiding its leave from the
        # others for the grace period.
        resume = (self._resume_token or "") if self.options.reconnect_window > 0 else None
        return p.encode_hello(self.name, self.room_asked, self.echo, self.token, resume)

    async def _open(self, timeout: float) -> None:
        conn = Connection(self, self._hello())
        self._attempt = conn

        async def connect_and_handshake() -> None:
            server_hostname = self.host if self.tls is not None else None
            await self.loop.create_connection(
                lambda: conn, self.host, self.port, ssl=self.tls, server_hostname=server_hostname
            )
            await conn.handshake

        try:
            await asyncio.wait_for(connect_and_handshake(), timeout)
        except asyncio.CancelledError:
            if not conn.welcomed:
                conn.abort()
            raise
        except asyncio.TimeoutError:
            if conn.welcomed:
                return
            conn.abort()
            raise ConnectTimeout(
                "timed out connecting to %s:%d (%.3g s)" % (self.host, self.port, timeout)
            ) from None
        except ConnectError:
            conn.abort()
            raise
        except ssl.SSLError as e:
            conn.abort()
            raise ConnectError("TLS: %s" % e) from e
        except OSError as e:
            conn.abort()
            raise ConnectError("cannot connect to %s:%d: %s" % (self.host, self.port, e)) from e
        finally:
            if self._attempt is conn:
                self._attempt = None

    # --- called by the connection -------------------------------------------

    def _welcomed(self, conn: Connection, w: p.Welcome) -> None:
        events: List[Event] = []
        with self.lock:
            old = self._members
            new = list(w.members)
            if self._ever_welcomed:
                self._stats.reconnects += 1
                if w.resumed:
                    self._stats.resumes += 1
                gone = [m for m in old if m not in new and m != self.name]
                came = [m for m in new if m not in old and m != self.name]
                events = [Left(m, CloseReason.LEFT_WHILE_AWAY) for m in gone]
                events += [Joined(m) for m in came]
            self._ever_welcomed = True
            self._members = new
            self.room = w.room
            self.max_payload = min(p.MAX_PAYLOAD, w.max_payload)
            self.resumed = bool(w.resumed)
            self._resume_token = w.resume_token
            self._conn = conn
            if not self._closing:
                self._state = State.CONNECTED
        for e in events:
            self.inbox.push(e)
        self.inbox.changed()
        self._flush()

    def _received(self, message: Message) -> None:
        with self.lock:
            self._stats.received += 1
        self.inbox.push(message)

    def _member_joined(self, name: str) -> None:
        with self.lock:
            if name not in self._members:
                self._members.append(name)
        self.inbox.push(Joined(name))

    def _member_left(self, name: str, reason: CloseReason) -> None:
        with self.lock:
            if name in self._members:
                self._members.remove(name)
        self.inbox.push(Left(name, reason))

    def _count(self, counter: str) -> None:
        with self.lock:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)

    def _flush(self) -> None:
        """Writes queued payloads to the connection, while it takes them."""
        with self.lock:
            self._flush_scheduled = False
        conn = self._conn
        if conn is None or conn.end_reason is not None or conn.transport is None:
            return
        while not conn.paused:
            batch = []
            size = 0
            with self.lock:
                while self._outbound and size < WRITE_BATCH_BYTES:
                    payload = self._outbound.popleft()
                    batch.append(p.encode_data(payload))
                    size += len(payload) + 5
                self._stats.sent += len(batch)
            if not batch:
                return
            conn._write(b"".join(batch))

    def _connection_ended(self, conn: Connection, reason: Disconnected) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        if self._closing:
            return
        if self._retryable(reason) and self.options.reconnect_window > 0:
            self._set_state(State.RECONNECTING)
            self._reconnecting = self.loop.create_task(self._reconnect(reason))
        else:
            self._set_state(State.CLOSED, reason)

    @staticmethod
    def _retryable(reason: Disconnected) -> bool:
        if reason.kind in (DisconnectKind.CONNECTION_LOST, DisconnectKind.TIMEOUT):
            return True
        return reason.kind is DisconnectKind.GOODBYE and reason.reason in RETRYABLE_GOODBYES

    def _set_state(self, state: State, error: Optional[Disconnected] = None) -> None:
        with self.lock:
            self._state = state
        if error is not None:
            self.inbox.end(error)
        self.inbox.changed()
        if state is State.CLOSED and self._closed is not None:
            self._closed.set()

    # --- reconnecting -------------------------------------------------------

    async def _reconnect(self, cause: Disconnected) -> None:
        try:
            await self._reconnect_loop(cause)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug: never leave the client reconnecting forever
            err = Disconnected(DisconnectKind.CONNECTION_LOST, "reconnecting failed: %r" % e)
            err.__cause__ = e
            self._set_state(State.CLOSED, err)

    async def _reconnect_loop(self, cause: Disconnected) -> None:
        opts = self.options
        deadline = self.loop.time() + opts.reconnect_window
        delay = opts.backoff_initial
        last: Exception = cause
        at_once = False
        while True:
            if not at_once:
                wait = random.uniform(delay / 2, delay)
                delay = min(delay * 2, opts.backoff_max)
                if self.loop.time() + wait >= deadline:
                    break
                await asyncio.sleep(wait)
            at_once = False
            left = deadline - self.loop.time()
            if left <= 0:
                break
            try:
                await self._open(min(opts.connect_timeout, left))
                return
            except Refused as e:
                last = e
                if e.reason is RefuseReason.RESUME_INVALID and self._resume_token:
                    # A restarted server forgets its tokens: join afresh, now.
                    self._resume_token = None
                    self._count("resume_refusals")
                    at_once = True
                    continue
                if e.reason in RETRYABLE_REFUSALS:
                    continue
                self._set_state(
                    State.CLOSED,
                    Disconnected(DisconnectKind.REFUSED, e.text, refusal=e.reason),
                )
                return
            except _HandshakeEnd as e:
                last = e
                if e.goodbye in (CloseReason.PROTOCOL_ERROR, CloseReason.READ_ONLY):
                    err = Disconnected(DisconnectKind.GOODBYE, str(e), reason=e.goodbye)
                    self._set_state(State.CLOSED, err)
                    return
            except ConnectError as e:
                last = e
        if isinstance(last, Disconnected):
            final = last
        elif isinstance(last, Refused):
            final = Disconnected(DisconnectKind.REFUSED, last.text, refusal=last.reason)
        else:
            final = Disconnected(DisconnectKind.CONNECTION_LOST, str(last))
        final = final.with_message(
            "gave up reconnecting after %.3g s; last: %s" % (opts.reconnect_window, last)
        )
        self._set_state(State.CLOSED, final)

    # --- closing ------------------------------------------------------------

    async def close(self) -> None:
        """Sends what is queued and GOODBYE, waits (bounded) for the
        server's GOODBYE, and closes. Idempotent."""
        with self.lock:
            if self._closing or self._state is State.CLOSED:
                already = True
            else:
                already = False
                self._closing = True
        if already:
            if self._state is not State.CLOSED and self._closed is not None:
                await self._closed.wait()
            return
        task = self._reconnecting
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        if self._attempt is not None:
            self._attempt.abort()
        conn = self._conn
        if conn is not None and conn.end_reason is None and conn.transport is not None:
            with self.lock:
                queued = list(self._outbound)
                self._outbound.clear()
                self._stats.sent += len(queued)
            conn._write(b"".join(p.encode_data(x) for x in queued) + p.GOODBYE_NORMAL_BYTES)
            # Read on until the server's GOODBYE and end of stream: closing
            # with its frames unread would reset the connection, and the
            # others could see a lost connection instead of a clean leave.
            try:
                await asyncio.wait_for(asyncio.shield(conn.done), 2 * CLOSE_FLUSH_TIMEOUT)
            except asyncio.TimeoutError:
                pass
            conn.abort()
        self._set_state(State.CLOSED, Disconnected(DisconnectKind.CLOSED))
