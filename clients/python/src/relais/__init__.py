"""relais: a Python client for the relais real-time relay.

Synchronous (a background thread does the networking)::

    import relais

    with relais.Client.connect("127.0.0.1", 7777, "alice", room="arena") as client:
        client.send("x=1")
        msg = client.recv(timeout=1.0)
        print(msg.sender, msg.payload)

asyncio: see :mod:`relais.aio`. The wire format is PROTOCOL.md in the
relais repository; :mod:`relais.protocol` encodes and decodes it.
"""

from .client import Client, connect, list_rooms
from .errors import (
    ConnectError,
    ConnectTimeout,
    Disconnected,
    DisconnectKind,
    InvalidName,
    InvalidRoom,
    InvalidToken,
    PayloadTooLarge,
    Refused,
    RelaisError,
)
from .events import Joined, Left, Message, State, Stats
from .names import validate_name, validate_room
from .protocol import MAX_PAYLOAD, VERSION, CloseReason, RefuseReason, RoomInfo

__version__ = "0.1.0"

__all__ = [
    "Client",
    "CloseReason",
    "ConnectError",
    "ConnectTimeout",
    "DisconnectKind",
    "Disconnected",
    "InvalidName",
    "InvalidRoom",
    "InvalidToken",
    "Joined",
    "Left",
    "MAX_PAYLOAD",
    "Message",
    "PayloadTooLarge",
    "Refused",
    "RefuseReason",
    "RelaisError",
    "RoomInfo",
    "State",
    "Stats",
    "VERSION",
    "connect",
    "list_rooms",
    "validate_name",
    "validate_room",
]
