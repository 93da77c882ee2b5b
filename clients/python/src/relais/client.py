"""The synchronous client: :class:`Client`.

Connecting blocks; after it, a background thread (running a private asyncio
event loop) does all the networking: :meth:`Client.send` only queues and
returns at once, :meth:`Client.recv` takes what has already arrived (or
waits for it, with a timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
import threading
import time
import weakref
from typing import Iterator, List, Optional, Union

from . import protocol as p
from ._engine import Engine, Event, Options, ThreadInbox, room_list_frame, tls_context
from .errors import ConnectError, ConnectTimeout, Disconnected, Refused
from .events import Message, State, Stats
from .protocol import RoomInfo


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        # Let cancelled callbacks run, then close.
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()


def _shutdown(
    loop: asyncio.AbstractEventLoop, engine: Engine, thread: threading.Thread, wait: float
) -> None:
    """Closes the engine (bounded) and stops the loop thread."""
    if loop.is_closed() or not thread.is_alive():
        return
    if threading.current_thread() is thread:
        # A finalizer running on the loop thread itself: no waiting here.
        loop.create_task(engine.close()).add_done_callback(lambda _: loop.stop())
        return
    try:
        fut = asyncio.run_coroutine_threadsafe(engine.close(), loop)
        fut.result(wait)
    except (concurrent.futures.TimeoutError, RuntimeError, Exception):
        pass
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:
        pass
    thread.join(wait)


class Client:
    """A connection to a relais server, with automatic reconnect.

    Create one with :meth:`Client.connect` (or :func:`relais.connect`). All
    methods may be called from any thread. Use it as a context manager, or
    call :meth:`close`, to leave the room cleanly (the others then see
    ``Left(name, CloseReason.NORMAL)``).
    """

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Client.connect(host, port, name, ...) to create a Client")

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        name: str,
        room: Optional[str] = None,
        echo: bool = True,
        token: Optional[str] = None,
        tls: Union[None, bool, ssl.SSLContext] = None,
        *,
        connect_timeout: float = 5.0,
        keepalive: Optional[float] = 10.0,
        reconnect: bool = True,
        reconnect_window: float = 60.0,
        outbound_capacity: int = 1024,
        inbound_capacity: int = 4096,
    ) -> "Client":
        """Connects to ``host:port`` and joins ``room`` (``None`` or "" for
        the default room, ``lobby``) as ``name``; returns once the server
        has answered.

        - ``echo``: receive your own messages back (how a client measures
          its round-trip time).
        - ``token``: a join token (JWT) for servers that require one.
        - ``tls``: an :class:`ssl.SSLContext` to speak TLS (``True`` for
          :func:`ssl.create_default_context`); the server name checked is
          ``host``.
        - ``connect_timeout``: seconds for the TCP connection, TLS and the
          handshake, per attempt.
        - ``keepalive``: seconds of silence from the server after which the
          client sends ``PING``; after three silent intervals the
          connection counts as lost. 0 or ``None``: off (the client still
          answers the server's ``PING``).
        - ``reconnect``/``reconnect_window``: after a lost connection or a
          server restart, reconnect by itself (resuming the seat where the
          server allows it) for at most ``reconnect_window`` seconds; 0 or
          ``reconnect=False``: never.
        - ``outbound_capacity``/``inbound_capacity``: bounds of the send and
          receive queues; when full, the oldest entry is dropped (counted
          in :attr:`stats`).

        Raises :class:`relais.InvalidName`/:class:`relais.InvalidRoom`
        (nothing sent), :class:`relais.Refused` (with ``reason``, a
        :class:`relais.RefuseReason`), :class:`relais.ConnectTimeout` or
        :class:`relais.ConnectError`. The first connection is not retried.
        """
        options = Options(
            connect_timeout=connect_timeout,
            keepalive=keepalive,
            reconnect=reconnect,
            reconnect_window=reconnect_window,
            outbound_capacity=outbound_capacity,
            inbound_capacity=inbound_capacity,
        )
        self = object.__new__(cls)
        inbox = ThreadInbox(options.inbound_capacity)
        loop = asyncio.new_event_loop()
        try:
            engine = Engine(
                host, port, name, room, echo, token, tls, options, inbox, loop, threadsafe=True
            )
        except BaseException:
            loop.close()
            raise
        thread = threading.Thread(
            target=_run_loop, args=(loop,), name="relais-%s" % engine.name, daemon=True
        )
        thread.start()
        fut = asyncio.run_coroutine_threadsafe(engine.connect_first(), loop)
        try:
            # The engine bounds the attempt itself; this is a safety net.
            fut.result(connect_timeout + 5.0)
        except BaseException:
            fut.cancel()
            _shutdown(loop, engine, thread, 2.0)
            raise
        self._engine = engine
        self._inbox = inbox
        self._loop = loop
        self._thread = thread
        self._close_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, loop, engine, thread, 3.0)
        return self

    # --- identity -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name this client registered (in NFC)."""
        return self._engine.name

    @property
    def room(self) -> str:
        """The room joined, as the server named it (``lobby`` by default)."""
        return self._engine.room or ""

    @property
    def max_payload(self) -> int:
        """The largest payload :meth:`send` accepts."""
        return self._engine.max_payload

    # --- sending --------------------------------------------------------------

    def send(self, payload: Union[bytes, bytearray, memoryview, str]) -> None:
        """Queues ``payload`` (a ``str`` is sent as UTF-8) for the room and
        returns at once; a background thread writes it. When the send queue
        is full the oldest queued payload is dropped. While reconnecting,
        payloads wait in the queue and go out after the ``WELCOME``.

        Raises :class:`relais.PayloadTooLarge` (nothing queued) or, once the
        client is closed, :class:`relais.Disconnected`."""
        self._engine.send(payload)

    # --- receiving ------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Message:
        """The oldest received :class:`Message`, waiting up to ``timeout``
        seconds (``None``: until one comes) for one. Presence events queued
        before it are dropped (``members`` stays current; use
        :meth:`recv_event` to see them).

        Raises :class:`TimeoutError` if nothing came in time, and
        :class:`relais.Disconnected` once the client is closed and every
        message received before has been taken."""
        event = self._inbox.take(True, timeout)
        assert isinstance(event, Message)
        return event

    def recv_event(self, timeout: Optional[float] = None) -> Event:
        """The oldest received event: :class:`Message`, :class:`Joined` or
        :class:`Left` (see :meth:`recv` for ``timeout`` and errors)."""
        return self._inbox.take(False, timeout)

    def poll(self) -> Optional[Message]:
        """Like :meth:`recv` but never waits: ``None`` if no message is
        waiting. Call it every frame of a game loop."""
        event = self._inbox.poll(True)
        assert event is None or isinstance(event, Message)
        return event

    def poll_event(self) -> Optional[Event]:
        """Like :meth:`recv_event` but never waits: ``None`` if nothing is
        waiting."""
        return self._inbox.poll(False)

    def __iter__(self) -> Iterator[Event]:
        """Events, waiting for each, until the client is closed."""
        while True:
            try:
                yield self.recv_event()
            except Disconnected:
                return

    # --- state ----------------------------------------------------------------

    @property
    def members(self) -> List[str]:
        """The room's members, this client included: the ``WELCOME``'s list
        kept current by joins and leaves (during ``reconnecting``: the list
        as it was when the connection was lost)."""
        return self._engine.members

    @property
    def state(self) -> State:
        """``connected``, ``reconnecting`` or ``closed``."""
        return self._engine.state

    @property
    def error(self) -> Optional[Disconnected]:
        """Why the client is closed, or ``None`` while it is not."""
        return self._engine.error

    @property
    def resumed(self) -> bool:
        """Whether the latest ``WELCOME`` took back the seat of a lost
        connection (the others saw nothing)."""
        return self._engine.resumed

    @property
    def stats(self) -> Stats:
        """A snapshot of the client's counters."""
        return self._engine.stats

    def wait_state(self, state: Union[State, str], timeout: Optional[float] = None) -> bool:
        """Waits until the client is in ``state``; ``False`` if ``timeout``
        seconds passed first."""
        want = State(state)
        return self._inbox.wait_for(lambda: self._engine.state is want, timeout)

    # --- closing --------------------------------------------------------------

    def close(self) -> None:
        """Leaves the room: writes the queued payloads, says ``GOODBYE``,
        waits (at most about 2 s) for the server's goodbye, and stops the
        background thread. Idempotent."""
        with self._close_lock:
            self._finalizer()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<relais.Client %r in %r, %s>" % (self.name, self.room, self.state.value)

    # --- for tests ------------------------------------------------------------

    def _test_socket(self):
        """The current connection's socket; tests shut it down to make the
        connection drop without a goodbye."""
        return self._engine.test_socket()


def connect(host: str, port: int, name: str, room: Optional[str] = None, **kwargs) -> Client:
    """Shorthand for :meth:`Client.connect`."""
    return Client.connect(host, port, name, room, **kwargs)


def list_rooms(
    host: str,
    port: int,
    tls: Union[None, bool, ssl.SSLContext] = None,
    timeout: float = 5.0,
) -> List[RoomInfo]:
    """The server's rooms (sorted by name) and their member counts, from a
    one-shot ``LIST_ROOMS`` connection. Raises :class:`relais.Refused`
    (e.g. server full), :class:`relais.ConnectTimeout` or
    :class:`relais.ConnectError`."""
    context = tls_context(tls)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout)
    except socket.timeout:
        raise ConnectTimeout("timed out connecting to %s:%d" % (host, port)) from None
    except OSError as e:
        raise ConnectError("cannot connect to %s:%d: %s" % (host, port, e)) from e
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.sendall(p.LIST_ROOMS_BYTES)
        decoder = p.FrameDecoder(p.MAX_FRAME_LEN)
        rooms: List[RoomInfo] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            data = sock.recv(64 * 1024)
            if not data:
                raise ConnectError("the server closed the connection before the room list")
            decoder.feed(data)
            for body in decoder.frames():
                if room_list_frame(body, rooms):
                    return rooms
    except socket.timeout:
        raise ConnectTimeout("timed out listing the rooms of %s:%d" % (host, port)) from None
    except (ConnectError, Refused):
        raise
    except OSError as e:
        raise ConnectError("listing the rooms of %s:%d: %s" % (host, port, e)) from e
    finally:
        sock.close()
