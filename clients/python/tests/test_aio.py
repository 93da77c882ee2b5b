"""The asyncio client (``relais.aio``) against the real server: the sync
tests' equivalents."""

from __future__ import annotations

import asyncio
import socket
import time
import unittest

from support import PATIENCE, ServerTest

import relais
import relais.aio
from relais import CloseReason, DisconnectKind, Joined, Left, Message, RefuseReason, State


class AioBase(ServerTest):
    """Each test is a coroutine run with ``asyncio.run``, bounded by
    PATIENCE."""

    def run_async(self, coro) -> None:
        async def bounded():
            await asyncio.wait_for(coro, 2 * PATIENCE)

        asyncio.run(bounded())

    async def connect(self, name: str, room=None, **kwargs) -> relais.aio.AsyncClient:
        return await relais.aio.connect("127.0.0.1", self.server.port, name, room, **kwargs)

    async def event(self, client, timeout: float = PATIENCE):
        try:
            return await client.recv_event(timeout)
        except TimeoutError:
            raise AssertionError("%s received no event within %.3g s" % (client.name, timeout))

    async def message(self, client, timeout: float = PATIENCE):
        try:
            return await client.recv(timeout)
        except TimeoutError:
            raise AssertionError("%s received no message within %.3g s" % (client.name, timeout))

    async def poll_until(self, predicate, what: str, timeout: float = PATIENCE) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s" % what)
            await asyncio.sleep(0.01)


class AioTest(AioBase):
    def test_aio_join_members_and_send_recv(self) -> None:
        async def main():
            alice = await self.connect("alice", "arena", echo=False)
            self.assertIs(alice.state, State.CONNECTED)
            self.assertEqual((alice.room, alice.members), ("arena", ["alice"]))
            async with relais.aio.connect("127.0.0.1", self.server.port, "bob", "arena") as bob:
                self.assertEqual(bob.members, ["alice", "bob"])
                self.assertEqual(await self.event(alice), Joined("bob"))
                alice.send(b"\x00\xffstate")
                self.assertEqual(await self.message(bob), Message("alice", b"\x00\xffstate"))
                bob.send("hi")
                self.assertEqual(await self.message(bob), Message("bob", b"hi"))  # echo
                self.assertEqual(await self.message(alice), Message("bob", b"hi"))
                self.assertIsNone(alice.poll())
                with self.assertRaises(TimeoutError):
                    await alice.recv(timeout=0.1)
            # Leaving the block closed bob cleanly.
            self.assertIs(bob.state, State.CLOSED)
            self.assertEqual(await self.event(alice), Left("bob", CloseReason.NORMAL))
            await alice.close()
            with self.assertRaises(relais.Disconnected) as cm:
                alice.send("x")
            self.assertIs(cm.exception.kind, DisconnectKind.CLOSED)

        self.run_async(main())

    def test_aio_presence_and_async_for(self) -> None:
        async def main():
            alice = await self.connect("alice")
            bob = await self.connect("bob")
            bob.send("one")
            await bob.close()
            seen = []
            async for event in alice:
                seen.append(event)
                if len(seen) == 3:
                    break
            self.assertEqual(
                seen, [Joined("bob"), Message("bob", b"one"), Left("bob", CloseReason.NORMAL)]
            )
            self.assertEqual(alice.members, ["alice"])
            await alice.close()
            self.assertEqual([e async for e in alice], [])

        self.run_async(main())

    def test_aio_name_taken_and_invalid_name(self) -> None:
        async def main():
            alice = await self.connect("alice")
            with self.assertRaises(relais.Refused) as cm:
                await self.connect("Alice")
            self.assertIs(cm.exception.reason, RefuseReason.NAME_TAKEN)
            with self.assertRaises(relais.InvalidName):
                await self.connect("bad\x00name")
            with self.assertRaises(relais.InvalidName):
                await self.connect("a" * 65)
            await alice.close()

        self.run_async(main())

    def test_aio_list_rooms(self) -> None:
        async def main():
            port = self.server.port
            self.assertEqual(await relais.aio.list_rooms("127.0.0.1", port), [])
            a = await self.connect("a", "r2")
            b = await self.connect("b", "r1")
            rooms = await relais.aio.list_rooms("127.0.0.1", port)
            self.assertEqual(rooms, [relais.RoomInfo("r1", 1), relais.RoomInfo("r2", 1)])
            await a.close()
            await b.close()

        self.run_async(main())

    def test_aio_reconnect_after_server_restart(self) -> None:
        async def main():
            alice = await self.connect("alice", "arena")
            loop = asyncio.get_running_loop()
            # Blocking calls in a thread: the client must keep running.
            await loop.run_in_executor(None, self.server.terminate)
            self.assertTrue(await alice.wait_state(State.RECONNECTING, PATIENCE))
            alice.send("queued")
            self.server = await loop.run_in_executor(None, self.restart, self.server)
            self.assertTrue(await alice.wait_state(State.CONNECTED, PATIENCE), alice.state)
            self.assertEqual(alice.stats.reconnects, 1)
            self.assertEqual(await self.message(alice), Message("alice", b"queued"))
            await alice.close()

        self.run_async(main())

    def test_aio_resume_within_grace(self) -> None:
        self.require_resume()

        async def main():
            alice = await self.connect("alice", "arena")
            bob = await self.connect("bob", "arena")
            self.assertEqual(await self.event(alice), Joined("bob"))
            alice._test_socket().shutdown(socket.SHUT_RDWR)
            await self.poll_until(lambda: alice.stats.reconnects == 1, "alice to reconnect")
            self.assertIs(alice.state, State.CONNECTED)
            self.assertTrue(alice.resumed)
            alice.send("back")
            self.assertEqual(await self.event(bob), Message("alice", b"back"))
            await alice.close()
            self.assertEqual(await self.event(bob), Left("alice", CloseReason.NORMAL))
            await bob.close()

        self.run_async(main())


class AioKeepaliveTest(AioBase):
    server_args = ("--keepalive", "1")

    def test_aio_keepalive_answered(self) -> None:
        async def main():
            alice = await self.connect("alice")
            started = time.monotonic()
            await self.poll_until(lambda: alice.stats.pongs_sent >= 4, "alice to answer 4 PINGs")
            self.assertGreaterEqual(time.monotonic() - started, 3.0)
            self.assertIs(alice.state, State.CONNECTED)
            self.assertEqual(alice.stats.reconnects, 0)
            alice.send("alive")
            self.assertEqual(await self.message(alice), Message("alice", b"alive"))
            await alice.close()

        self.run_async(main())


if __name__ == "__main__":
    unittest.main()
