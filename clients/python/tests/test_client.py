"""The synchronous client against the real server."""

from __future__ import annotations

import signal
import socket
import time
import unittest

from support import PATIENCE, ServerTest, wait_until

import relais
from relais import CloseReason, DisconnectKind, Joined, Left, Message, RefuseReason, State


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class JoinTest(ServerTest):
    def test_join_welcome_members(self) -> None:
        alice = self.client("alice", "arena")
        self.assertIs(alice.state, State.CONNECTED)
        self.assertEqual(alice.state, "connected")
        self.assertEqual(alice.room, "arena")
        self.assertEqual(alice.name, "alice")
        self.assertEqual(alice.members, ["alice"])
        self.assertEqual(alice.max_payload, relais.MAX_PAYLOAD)
        bob = self.client("bob", "arena")
        self.assertEqual(bob.members, ["alice", "bob"])
        self.assertEqual(self.next_event(alice), Joined("bob"))
        self.assertEqual(alice.members, ["alice", "bob"])
        carol = self.client("carol")
        self.assertEqual(carol.room, "lobby")
        self.assertEqual(carol.members, ["carol"])

    def test_name_is_registered_in_nfc(self) -> None:
        decomposed = "e\u0301" * 32  # 96 bytes as given, 64 in NFC
        c = self.client(decomposed)
        self.assertEqual(c.name, "\u00e9" * 32)
        self.assertEqual(c.members, ["\u00e9" * 32])

    def test_name_taken_is_a_typed_refusal(self) -> None:
        alice = self.client("alice", "arena")
        for name in ("alice", "ALICE", "\u0430lice"):  # the last with a Cyrillic a
            with self.assertRaises(relais.Refused, msg=name) as cm:
                relais.Client.connect("127.0.0.1", self.server.port, name, room="arena")
            self.assertIs(cm.exception.reason, RefuseReason.NAME_TAKEN)
            self.assertEqual(cm.exception.code, 1)
            self.assertEqual(cm.exception.text, "name taken")
            self.assertIsInstance(cm.exception, relais.ConnectError)
        # The holder is not disturbed; the name is free in another room.
        self.assertIs(alice.state, State.CONNECTED)
        self.assertIsNone(alice.poll_event())
        self.client("alice", "elsewhere")

    def test_invalid_name_rejected_locally(self) -> None:
        # Nothing listens on this port: a check that reached the network
        # would fail with a ConnectError, not InvalidName.
        port = free_port()
        for name in ("", "a" * 65, "bad\nname", " alice", "alice ", "ab\u202e", "a\u200bb", "\ue000"):
            with self.assertRaises(relais.InvalidName, msg=repr(name)):
                relais.Client.connect("127.0.0.1", port, name)
        with self.assertRaises(relais.InvalidRoom):
            relais.Client.connect("127.0.0.1", port, "alice", room="arena\n")
        with self.assertRaises(relais.InvalidToken):
            relais.Client.connect("127.0.0.1", port, "alice", token="t\u00e9")
        with self.assertRaises(relais.ConnectError) as cm:
            relais.Client.connect("127.0.0.1", port, "alice")
        self.assertNotIsInstance(cm.exception, relais.InvalidName)

    def test_refused_by_the_server_for_what_only_it_checks(self) -> None:
        # U+0378 is unassigned: not checked locally (the server may know a
        # newer Unicode), refused by the server.
        with self.assertRaises(relais.Refused) as cm:
            relais.Client.connect("127.0.0.1", self.server.port, "a\u0378")
        self.assertIs(cm.exception.reason, RefuseReason.INVALID_NAME)
        self.assertIn("U+0378", cm.exception.text)

    def test_list_rooms(self) -> None:
        port = self.server.port
        self.assertEqual(relais.list_rooms("127.0.0.1", port), [])
        self.client("alice", "zebra")
        self.client("bob", "arena")
        self.client("carol", "arena")
        self.assertEqual(
            relais.list_rooms("127.0.0.1", port),
            [relais.RoomInfo("arena", 2), relais.RoomInfo("zebra", 1)],
        )
        with self.assertRaises(relais.ConnectError):
            relais.list_rooms("127.0.0.1", free_port())


class RelayTest(ServerTest):
    def test_echo(self) -> None:
        alice = self.client("alice")
        alice.send(b"x=1")
        self.assertEqual(self.next_message(alice), Message("alice", b"x=1"))

    def test_echo_off(self) -> None:
        alice = self.client("alice")
        bob = self.client("bob", echo=False)
        bob.send("from bob")
        self.assertEqual(self.next_message(alice), Message("bob", b"from bob"))
        alice.send("from alice")
        # bob's own message would have come first: it was relayed before.
        self.assertEqual(self.next_message(bob), Message("alice", b"from alice"))

    def test_send_recv_between_two_clients(self) -> None:
        alice = self.client("alice", "arena", echo=False)
        bob = self.client("bob", "arena", echo=False)
        every_byte = bytes(range(256))
        big = bytes(i % 251 for i in range(relais.MAX_PAYLOAD))
        for payload in (every_byte, "héllo", b"", big, bytearray(b"ba"), memoryview(b"mv")):
            alice.send(payload)
            expected = payload.encode() if isinstance(payload, str) else bytes(payload)
            self.assertEqual(self.next_message(bob), Message("alice", expected))
        bob.send("back")
        msg = self.next_message(alice)
        self.assertEqual((msg.sender, msg.text), ("bob", "back"))
        with self.assertRaises(relais.PayloadTooLarge):
            alice.send(b"x" * (relais.MAX_PAYLOAD + 1))
        self.assertEqual(alice.stats.sent, 6)
        self.assertEqual(bob.stats.received, 6)

    def test_presence(self) -> None:
        alice = self.client("alice")
        bob = self.client("bob")
        self.assertEqual(self.next_event(alice), Joined("bob"))
        bob.send("hi")
        self.assertEqual(self.next_event(alice), Message("bob", b"hi"))
        bob.close()
        self.assertEqual(self.next_event(alice), Left("bob", CloseReason.NORMAL))
        self.assertEqual(alice.members, ["alice"])

    def test_recv_skips_presence_and_times_out(self) -> None:
        alice = self.client("alice")
        self.assertIsNone(alice.poll())
        started = time.monotonic()
        with self.assertRaises(TimeoutError):
            alice.recv(timeout=0.2)
        self.assertGreaterEqual(time.monotonic() - started, 0.19)
        bob = self.client("bob")
        bob.send("m")
        self.assertEqual(self.next_message(alice), Message("bob", b"m"))  # Joined skipped
        self.assertIsNone(alice.poll_event())

    def test_clean_close_gives_the_other_side_left_normal(self) -> None:
        alice = self.client("alice")
        bob = relais.Client.connect("127.0.0.1", self.server.port, "bob")
        self.assertEqual(self.next_event(alice), Joined("bob"))
        bob.send("last words")
        bob.close()
        self.assertIs(bob.state, State.CLOSED)
        self.assertIs(bob.error.kind, DisconnectKind.CLOSED)
        # What bob queued went out before his goodbye.
        self.assertEqual(self.next_event(alice), Message("bob", b"last words"))
        self.assertEqual(self.next_event(alice), Left("bob", CloseReason.NORMAL))
        with self.assertRaises(relais.Disconnected) as cm:
            bob.send("too late")
        self.assertIs(cm.exception.kind, DisconnectKind.CLOSED)
        # bob's echo was received before the close and is still there.
        self.assertEqual(bob.recv(0), Message("bob", b"last words"))
        with self.assertRaises(relais.Disconnected):
            bob.recv(PATIENCE)
        bob.close()  # again: nothing
        # The name is free at once.
        self.client("bob")

    def test_context_manager_and_iteration(self) -> None:
        alice = self.client("alice")
        with relais.connect("127.0.0.1", self.server.port, "bob") as bob:
            self.assertEqual(self.next_event(alice), Joined("bob"))
            bob.send("x")
            seen = []
            for event in bob:
                seen.append(event)
                if len(seen) == 1:
                    break
            self.assertEqual(seen, [Message("bob", b"x")])
        self.assertIs(bob.state, State.CLOSED)
        self.assertEqual(list(bob), [])  # ends at once
        self.assertEqual(self.next_event(alice), Message("bob", b"x"))
        self.assertEqual(self.next_event(alice), Left("bob", CloseReason.NORMAL))


class KeepaliveTest(ServerTest):
    server_args = ("--keepalive", "1")

    def test_keepalive_answered(self) -> None:
        # The server pings after 1 s of silence and drops a client after
        # three silent seconds; alice (client keepalive 10 s) says nothing
        # but answers each PING.
        alice = self.client("alice", keepalive=10)
        bob = self.client("bob", keepalive=10)
        self.assertEqual(self.next_event(alice), Joined("bob"))
        started = time.monotonic()
        wait_until(lambda: alice.stats.pongs_sent >= 4, "alice to answer 4 PINGs", PATIENCE)
        self.assertGreaterEqual(time.monotonic() - started, 3.0)
        self.assertIs(alice.state, State.CONNECTED)
        self.assertEqual(alice.stats.reconnects, 0)
        self.assertEqual(bob.stats.reconnects, 0)
        self.assertIsNone(alice.poll_event())  # bob never left
        self.assertIsNone(bob.poll_event())
        bob.send("still here")
        self.assertEqual(self.next_message(alice), Message("bob", b"still here"))


class ClientKeepaliveTest(ServerTest):
    def test_client_pings_after_silence(self) -> None:
        alice = self.client("alice", keepalive=0.2)
        wait_until(lambda: alice.stats.pings_sent >= 3, "alice to send 3 PINGs")
        # Each PONG reset the count: never three silent intervals in a row.
        self.assertIs(alice.state, State.CONNECTED)
        self.assertEqual(alice.stats.reconnects, 0)

    def test_gives_up_after_three_silent_intervals(self) -> None:
        alice = self.client("alice", keepalive=0.3, reconnect=False)
        self.server.signal(signal.SIGSTOP)  # the server hears nothing, says nothing
        self.addCleanup(self.server.signal, signal.SIGCONT)
        started = time.monotonic()
        self.assertTrue(alice.wait_state(State.CLOSED, PATIENCE), alice.state)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.85)
        self.assertLess(elapsed, 5.0)
        self.assertIs(alice.error.kind, DisconnectKind.TIMEOUT)
        self.assertEqual(alice.stats.pings_sent, 2)
        with self.assertRaises(relais.Disconnected) as cm:
            alice.recv(0)
        self.assertIs(cm.exception.kind, DisconnectKind.TIMEOUT)


if __name__ == "__main__":
    unittest.main()
