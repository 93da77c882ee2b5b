"""The asyncio client: ``client = await relais.aio.connect(...)``.

Everything runs on the caller's event loop; no thread is started. Call the
client's methods from that loop only.

::

    import asyncio, relais.aio

    async def main():
        async with relais.aio.connect("127.0.0.1", 7777, "alice", room="arena") as client:
            client.send(b"x=1")
            async for event in client:
                print(event)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import ssl
from typing import AsyncIterator, Generator, List, Optional, Union

from . import protocol as p
from ._engine import AsyncInbox, Engine, Event, Options, room_list_frame, tls_context
from .errors import ConnectError, ConnectTimeout, Disconnected
from .events import Message, State, Stats

__all__ = ["AsyncClient", "connect", "list_rooms"]


class AsyncClient:
    """A connection to a relais server on an asyncio loop, with automatic
    reconnect. Made by :func:`connect`; see :class:`relais.Client` for what
    each option and method means."""

    def __init__(self, engine: Engine, inbox: AsyncInbox) -> None:
        self._engine = engine
        self._inbox = inbox

    @property
    def name(self) -> str:
        return self._engine.name

    @property
    def room(self) -> str:
        return self._engine.room or ""

    @property
    def max_payload(self) -> int:
        return self._engine.max_payload

    def send(self, payload: Union[bytes, bytearray, memoryview, str]) -> None:
        """Queues ``payload`` and returns at once (not a coroutine); the
        event loop writes it. Drop-oldest when the queue is full."""
        self._engine.send(payload)

    async def recv(self, timeout: Optional[float] = None) -> Message:
        """The next :class:`relais.Message` (presence events before it are
        skipped). Raises :class:`TimeoutError` or
        :class:`relais.Disconnected`."""
        event = await self._inbox.take(True, timeout)
        assert isinstance(event, Message)
        return event

    async def recv_event(self, timeout: Optional[float] = None) -> Event:
        """The next event: :class:`relais.Message`, :class:`relais.Joined`
        or :class:`relais.Left`."""
        return await self._inbox.take(False, timeout)

    def poll(self) -> Optional[Message]:
        """The next message if one is waiting, else ``None``."""
        event = self._inbox.poll(True)
        assert event is None or isinstance(event, Message)
        return event

    def poll_event(self) -> Optional[Event]:
        """The next event if one is waiting, else ``None``."""
        return self._inbox.poll(False)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.recv_event()
            except Disconnected:
                return

    @property
    def members(self) -> List[str]:
        return self._engine.members

    @property
    def state(self) -> State:
        return self._engine.state

    @property
    def error(self) -> Optional[Disconnected]:
        return self._engine.error

    @property
    def resumed(self) -> bool:
        return self._engine.resumed

    @property
    def stats(self) -> Stats:
        return self._engine.stats

    async def wait_state(self, state: Union[State, str], timeout: Optional[float] = None) -> bool:
        """Waits until the client is in ``state``; ``False`` on timeout."""
        want = State(state)
        return await self._inbox.wait_for(lambda: self._engine.state is want, timeout)

    async def close(self) -> None:
        """Leaves the room cleanly (see :meth:`relais.Client.close`)."""
        await self._engine.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "<relais.aio.AsyncClient %r in %r, %s>" % (self.name, self.room, self.state.value)

    def _test_socket(self):
        return self._engine.test_socket()


class _Connecting:
    """What :func:`connect` returns: await it for the client, or use it as
    ``async with`` to close the client at the end of the block."""

    def __init__(self, coro) -> None:
        self._coro = coro
        self._client: Optional[AsyncClient] = None

    def __await__(self) -> Generator[object, None, AsyncClient]:
        return self._coro.__await__()

    async def __aenter__(self) -> AsyncClient:
        self._client = await self._coro
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()


async def _connect(
    host: str,
    port: int,
    name: str,
    room: Optional[str],
    echo: bool,
    token: Optional[str],
    tls: Union[None, bool, ssl.SSLContext],
    options: Options,
) -> AsyncClient:
    inbox = AsyncInbox(options.inbound_capacity)
    loop = asyncio.get_running_loop()
    engine = Engine(host, port, name, room, echo, token, tls, options, inbox, loop, threadsafe=False)
    await engine.connect_first()
    return AsyncClient(engine, inbox)


def connect(
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
) -> _Connecting:
    """Connects and joins; ``await`` it for an :class:`AsyncClient`. Same
    arguments and errors as :meth:`relais.Client.connect`."""
    options = Options(
        connect_timeout=connect_timeout,
        keepalive=keepalive,
        reconnect=reconnect,
        reconnect_window=reconnect_window,
        outbound_capacity=outbound_capacity,
        inbound_capacity=inbound_capacity,
    )
    return _Connecting(_connect(host, port, name, room, echo, token, tls, options))


async def list_rooms(
    host: str,
    port: int,
    tls: Union[None, bool, ssl.SSLContext] = None,
    timeout: float = 5.0,
) -> List[p.RoomInfo]:
    """The server's rooms (sorted by name) and their member counts."""
    context = tls_context(tls)

    async def query() -> List[p.RoomInfo]:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if context else None
        )
        try:
            writer.write(p.LIST_ROOMS_BYTES)
            decoder = p.FrameDecoder(p.MAX_FRAME_LEN)
            rooms: List[p.RoomInfo] = []
            while True:
                data = await reader.read(64 * 1024)
                if not data:
                    raise ConnectError("the server closed the connection before the room list")
                decoder.feed(data)
                for body in decoder.frames():
                    if room_list_frame(body, rooms):
                        return rooms
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(query(), timeout)
    except asyncio.TimeoutError:
        raise ConnectTimeout("timed out listing the rooms of %s:%d" % (host, port)) from None
    except OSError as e:
        raise ConnectError("cannot connect to %s:%d: %s" % (host, port, e)) from e

