"""Reconnect (with resume, spec-resume.md), sync client, against the real
server: restarts, crashes, lost connections.

The tests of ``ResumeTest`` need the server side of resume (``relais serve
--resume-grace``); until it is merged they fail, saying so.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import unittest

from support import PATIENCE, ServerTest, wait_until

import relais
from relais import CloseReason, DisconnectKind, Joined, Left, Message, RefuseReason, State


def drain(client: relais.Client) -> list:
    """Every event waiting in ``client``'s queue."""
    events = []
    while True:
        event = client.poll_event()
        if event is None:
            return events
        events.append(event)


class ReconnectTest(ServerTest):
    def test_reconnect_after_server_restart(self) -> None:
        # A graceful restart: GOODBYE 1, then the server is gone for a
        # while, then back on the same port; the client reconnects by
        # itself and what it queued meanwhile goes out after the WELCOME.
        alice = self.client("alice", "arena", outbound_capacity=2)
        self.server.terminate()
        self.assertTrue(alice.wait_state(State.RECONNECTING, PATIENCE), alice.state)
        for payload in ("1", "2", "3"):  # capacity 2: "1" is dropped
            alice.send(payload)
        self.assertEqual(alice.stats.dropped_outbound, 1)
        self.server = self.restart(self.server)
        self.assertTrue(alice.wait_state(State.CONNECTED, PATIENCE), alice.state)
        self.assertEqual(alice.stats.reconnects, 1)
        self.assertFalse(alice.resumed)  # a new server process: a fresh join
        self.assertEqual(alice.members, ["alice"])
        # Her echo: "3", maybe "2" before it (the server conflates a
        # waiting message with a newer one), never the dropped "1".
        got = [self.next_message(alice).payload]
        if got == [b"2"]:
            got.append(self.next_message(alice).payload)
        self.assertEqual(got[-1], b"3")
        # A late joiner gets alice's latest state in its snapshot.
        bob = self.client("bob", "arena")
        self.assertEqual(self.next_message(bob), Message("alice", b"3"))
        self.assertEqual(self.next_event(alice), Joined("bob"))

    def test_reconnect_after_server_crash_reports_the_member_diff(self) -> None:
        # SIGKILL: no GOODBYE, no LEFT. bob does not reconnect; carol joins
        # the new server. alice learns both from the difference between
        # her old member list and the new WELCOME's (or from JOINED if she
        # was back first).
        alice = self.client("alice", "arena")
        bob = self.client("bob", "arena", reconnect=False)
        self.assertEqual(self.next_event(alice), Joined("bob"))
        self.server.kill()
        self.assertTrue(bob.wait_state(State.CLOSED, PATIENCE), bob.state)
        self.assertIs(bob.error.kind, DisconnectKind.CONNECTION_LOST)
        self.assertTrue(alice.wait_state(State.RECONNECTING, PATIENCE), alice.state)
        self.server = self.restart(self.server)
        self.client("carol", "arena")
        wait_until(lambda: sorted(alice.members) == ["alice", "carol"], "alice to see carol")
        self.assertIs(alice.state, State.CONNECTED)
        events = []
        wait_until(
            lambda: events.extend(drain(alice)) or len(events) >= 2, "alice's two presence events"
        )
        self.assertCountEqual(events, [Left("bob", CloseReason.LEFT_WHILE_AWAY), Joined("carol")])

    def test_no_reconnect_when_disabled(self) -> None:
        alice = self.client("alice", reconnect=False)
        self.server.terminate()
        self.assertTrue(alice.wait_state(State.CLOSED, PATIENCE), alice.state)
        self.assertIs(alice.error.kind, DisconnectKind.GOODBYE)
        self.assertIs(alice.error.reason, CloseReason.SERVER_SHUTDOWN)
        with self.assertRaises(relais.Disconnected) as cm:
            alice.recv(PATIENCE)
        self.assertIs(cm.exception.reason, CloseReason.SERVER_SHUTDOWN)
        with self.assertRaises(relais.Disconnected):
            alice.send("x")

    def test_gives_up_after_the_reconnect_window(self) -> None:
        alice = self.client("alice", reconnect_window=0.6)
        self.server.kill()  # and not restarted
        started = time.monotonic()
        self.assertTrue(alice.wait_state(State.CLOSED, PATIENCE), alice.state)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertIs(alice.error.kind, DisconnectKind.CONNECTION_LOST)
        self.assertIn("gave up reconnecting", alice.error.message)

    def test_final_refusal_while_reconnecting(self) -> None:
        # The restarted server requires a join token alice does not have:
        # REFUSED 7 is final.
        alice = self.client("alice")
        secret = tempfile.NamedTemporaryFile("w", suffix=".secret", delete=False)
        self.addCleanup(os.unlink, secret.name)
        secret.write("s" * 40)
        secret.close()
        self.server.kill()
        self.server = self.start_server(
            "--token-secret-file", secret.name, port=self.server.port
        )
        self.assertTrue(alice.wait_state(State.CLOSED, PATIENCE), alice.state)
        self.assertIs(alice.error.kind, DisconnectKind.REFUSED)
        self.assertIs(alice.error.refusal, RefuseReason.TOKEN_REQUIRED)

    def test_close_while_reconnecting(self) -> None:
        alice = relais.Client.connect("127.0.0.1", self.server.port, "alice")
        self.server.kill()
        self.assertTrue(alice.wait_state(State.RECONNECTING, PATIENCE), alice.state)
        started = time.monotonic()
        alice.close()
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertIs(alice.state, State.CLOSED)
        self.assertIs(alice.error.kind, DisconnectKind.CLOSED)


class ResumeTest(ServerTest):
    """Need the server side of resume (spec-resume.md)."""

    def setUp(self) -> None:
        self.require_resume()
        super().setUp()

    def test_resume_within_grace(self) -> None:
        # alice's connection drops without a goodbye; she takes her seat
        # back within the grace: bob sees no LEFT and no JOINED.
        alice = self.client("alice", "arena")
        bob = self.client("bob", "arena")
        self.assertEqual(self.next_event(alice), Joined("bob"))
        bob.send("b-1")
        self.assertEqual(self.next_message(alice), Message("bob", b"b-1"))
        self.assertEqual(self.next_message(bob), Message("bob", b"b-1"))
        alice._test_socket().shutdown(socket.SHUT_RDWR)
        wait_until(lambda: alice.stats.reconnects == 1, "alice to reconnect")
        self.assertTrue(alice.wait_state(State.CONNECTED, PATIENCE), alice.state)
        self.assertTrue(alice.resumed)
        self.assertEqual(alice.stats.resumes, 1)
        self.assertEqual(alice.members, ["alice", "bob"])
        # The snapshot after a resume: bob's latest message again.
        self.assertEqual(self.next_event(alice), Message("bob", b"b-1"))
        alice.send("a-2")
        # bob's next event is alice's message: nothing about her leaving.
        self.assertEqual(self.next_event(bob), Message("alice", b"a-2"))
        self.assertEqual(bob.members, ["alice", "bob"])
        self.assertEqual(self.next_event(alice), Message("alice", b"a-2"))
        self.assertIsNone(alice.poll_event())

    def test_resume_token_refused_after_restart(self) -> None:
        # A restarted server forgets its tokens: REFUSED 14, then at once a
        # fresh join.
        alice = self.client("alice", "arena")
        self.server.terminate()
        self.assertTrue(alice.wait_state(State.RECONNECTING, PATIENCE), alice.state)
        self.server = self.restart(self.server)
        self.assertTrue(alice.wait_state(State.CONNECTED, PATIENCE), alice.state)
        self.assertEqual(alice.stats.resume_refusals, 1)
        self.assertEqual(alice.stats.reconnects, 1)
        self.assertEqual(alice.stats.resumes, 0)
        self.assertFalse(alice.resumed)
        alice.send("again")
        self.assertEqual(self.next_message(alice), Message("alice", b"again"))


if __name__ == "__main__":
    unittest.main()
