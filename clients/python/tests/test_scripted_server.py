"""The client's side of reconnect and resume against a scripted server (a
few lines of Python speaking the protocol), for what the real server
cannot be made to do on demand: hand out chosen resume tokens, refuse a
given attempt, cut a frame in half, send garbage. The same behaviour
against the real server is in test_reconnect.py.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
import unittest
from dataclasses import dataclass
from typing import Callable, List, Optional

from support import PATIENCE, wait_until

import relais
from relais import CloseReason, DisconnectKind, Joined, Left, Message, State
from relais import protocol as p


@dataclass
class Hello:
    flags: int
    name: str
    room: str
    token: Optional[str]
    resume: Optional[str]
    at: float


def read_frame(sock: socket.socket) -> Optional[bytes]:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return body


def parse_hello(body: bytes) -> Hello:
    assert body[0] == p.HELLO, body
    flags = body[3]
    i = 4
    name = body[i + 1 : i + 1 + body[i]].decode()
    i += 1 + body[i]
    room = body[i + 1 : i + 1 + body[i]].decode()
    i += 1 + body[i]
    token = resume = None
    if flags & p.FLAG_TOKEN:
        (t,) = struct.unpack_from(">H", body, i)
        token = body[i + 2 : i + 2 + t].decode()
        i += 2 + t
    if flags & p.FLAG_RESUME:
        resume = body[i + 1 : i + 1 + body[i]].decode()
        i += 1 + body[i]
    assert i == len(body), "trailing bytes in HELLO"
    return Hello(flags, name, room, token, resume, time.monotonic())


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def short(s: str) -> bytes:
    raw = s.encode()
    return bytes((len(raw),)) + raw


def welcome(members: List[str], resume: Optional[tuple] = None, room: str = "lobby") -> bytes:
    body = bytes((p.WELCOME,)) + struct.pack(">HI", 1, 65536) + short(room)
    body += struct.pack(">H", len(members)) + b"".join(short(m) for m in members)
    if resume is not None:
        resumed, token = resume
        body += bytes((1 if resumed else 0,)) + short(token)
    return frame(body)


def refused(code: int, text: str = "") -> bytes:
    return frame(bytes((p.REFUSED, code)) + text.encode())


class ScriptedServer:
    """Accepts connections one after another; for each, reads the HELLO,
    records it and calls ``script(n, hello, sock)`` (n from 0), which
    answers and returns when the connection should be closed (abruptly)."""

    def __init__(self, script: Callable[[int, Hello, socket.socket], None]) -> None:
        self.script = script
        self.hellos: List[Hello] = []
        self.errors: "queue.Queue[BaseException]" = queue.Queue()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        n = 0
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            try:
                sock.settimeout(PATIENCE)
                body = read_frame(sock)
                if body is None:
                    continue
                hello = parse_hello(body)
                self.hellos.append(hello)
                self.script(n, hello, sock)
            except BaseException as e:  # reported by the test
                self.errors.put(e)
            finally:
                sock.close()
            n += 1

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def hold(sock: socket.socket) -> None:
    """Keeps the connection until the client closes it, answering PINGs."""
    while True:
        body = read_frame(sock)
        if body is None or body[0] == p.GOODBYE:
            if body is not None:
                sock.sendall(p.GOODBYE_NORMAL_BYTES)
            return
        if body[0] == p.PING:
            sock.sendall(p.PONG_BYTES)


class ScriptedTest(unittest.TestCase):
    def serve(self, script) -> ScriptedServer:
        server = ScriptedServer(script)
        self.addCleanup(server.close)
        self.addCleanup(lambda: self.assertTrue(server.errors.empty(), server.errors.queue))
        return server

    def connect(self, server: ScriptedServer, name: str = "alice", **kw) -> relais.Client:
        c = relais.Client.connect("127.0.0.1", server.port, name, **kw)
        self.addCleanup(c.close)
        return c

    def test_resume_token_kept_resumed_and_refused(self) -> None:
        cut = threading.Event()

        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            if n == 0:  # first join: a token, then the connection drops
                sock.sendall(welcome(["bob", "alice"], (False, "T1")))
                cut.wait(PATIENCE)
            elif n == 1:  # resumed; meanwhile bob left and carol came
                sock.sendall(welcome(["alice", "carol"], (True, "T2")))
                sock.sendall(frame(b"\x83" + short("carol") + b"snap"))
                cut.wait(PATIENCE)
            elif n == 2:  # "a restarted server"
                sock.sendall(refused(14, "resume token invalid"))
            else:
                sock.sendall(welcome(["alice"], (False, "T3")))
                hold(sock)

        server = self.serve(script)
        alice = self.connect(server)
        self.assertEqual(alice.members, ["bob", "alice"])
        self.assertFalse(alice.resumed)
        cut.set()  # scripts 0 (and later 1) return: connection dropped
        wait_until(lambda: len(server.hellos) >= 4 and alice.state is State.CONNECTED, "4 HELLOs")
        h = server.hellos
        self.assertEqual([x.resume for x in h], ["", "T1", "T2", ""])
        self.assertTrue(all(x.flags & p.FLAG_RESUME for x in h))
        self.assertTrue(all(x.flags & p.FLAG_ECHO for x in h))
        # After REFUSED 14, at once: the backoff would have waited at least
        # 100 ms here (its second delay, drawn in [0.1, 0.2] s).
        self.assertLess(h[3].at - h[2].at, 0.09)
        st = alice.stats
        self.assertEqual((st.reconnects, st.resumes, st.resume_refusals), (2, 1, 1))
        self.assertFalse(alice.resumed)
        self.assertEqual(alice.members, ["alice"])
        events = []
        while True:
            e = alice.poll_event()
            if e is None:
                break
            events.append(e)
        self.assertEqual(
            events,
            [
                Left("bob", CloseReason.LEFT_WHILE_AWAY),
                Joined("carol"),
                Message("carol", b"snap"),
                Left("carol", CloseReason.LEFT_WHILE_AWAY),
            ],
        )

    def test_no_resume_flag_when_not_reconnecting(self) -> None:
        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            sock.sendall(welcome(["alice"]))
            hold(sock)

        server = self.serve(script)
        self.connect(server, reconnect=False, echo=False, token="t.k")
        self.assertEqual(server.hellos[0].flags, p.FLAG_TOKEN)
        self.assertEqual(server.hellos[0].token, "t.k")
        self.assertIsNone(server.hellos[0].resume)

    def test_backoff_and_retryable_refusals(self) -> None:
        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            if n == 0:
                sock.sendall(welcome(["alice"], (False, "T")))
            elif n < 6:  # too many joins, server full, name taken, overloaded,
                # cluster unavailable (a cluster node cut off from NATS)
                sock.sendall(refused((13, 5, 1, 11, 15)[n - 1]))
            else:
                sock.sendall(welcome(["alice"], (True, "T")))
                hold(sock)

        server = self.serve(script)
        alice = self.connect(server)
        wait_until(lambda: len(server.hellos) == 7 and alice.state is State.CONNECTED, "7 HELLOs")
        gaps = [b.at - a.at for a, b in zip(server.hellos[1:], server.hellos[2:])]
        # Each delay is drawn in [d/2, d], d = 0.2, 0.4, 0.8, 1.6, 3.2 s.
        for gap, d in zip(gaps, (0.2, 0.4, 0.8, 1.6, 3.2)):
            self.assertGreaterEqual(gap, d / 2 - 0.01, gaps)
            self.assertLess(gap, d + 0.5, gaps)
        # None of these refusals is about the seat: its token is kept.
        self.assertEqual([h.resume for h in server.hellos], [""] + ["T"] * 6)
        self.assertTrue(alice.resumed)

    def test_stream_ending_inside_a_frame_is_a_lost_connection(self) -> None:
        # How a server drops a slow consumer: mid-frame, without GOODBYE.
        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            sock.sendall(welcome(["alice"], (False, "T")))
            if n == 0:
                sock.sendall(frame(b"\x83\x01b" + b"x" * 100)[:50])
            else:
                hold(sock)

        server = self.serve(script)
        alice = self.connect(server)
        wait_until(lambda: alice.stats.reconnects == 1, "a reconnect")
        self.assertIs(alice.state, State.CONNECTED)

    def test_protocol_violation_is_final(self) -> None:
        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            sock.sendall(welcome(["alice"], (False, "T")) + frame(b"\x99"))
            time.sleep(0.5)

        server = self.serve(script)
        alice = self.connect(server)
        self.assertTrue(alice.wait_state(State.CLOSED, PATIENCE))
        self.assertIs(alice.error.kind, DisconnectKind.PROTOCOL)
        self.assertEqual(len(server.hellos), 1)

    def test_goodbye_rate_limit_is_final(self) -> None:
        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            sock.sendall(welcome(["alice"], (False, "T")) + frame(b"\x12\x04"))

        server = self.serve(script)
        alice = self.connect(server)
        self.assertTrue(alice.wait_state(State.CLOSED, PATIENCE))
        self.assertIs(alice.error.kind, DisconnectKind.GOODBYE)
        self.assertIs(alice.error.reason, CloseReason.RATE_LIMIT)

    def test_handshake_answers(self) -> None:
        answers = [
            frame(b"\x12\x03handshake timed out"),
            b"",  # end of stream
            refused(200, "new code"),
            frame(b"\x84\x01b"),  # JOINED before WELCOME
        ]

        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            sock.sendall(answers[n])

        server = self.serve(script)
        with self.assertRaises(relais.ConnectError) as cm:
            self.connect(server)
        self.assertIn("handshake timed out", str(cm.exception))
        with self.assertRaises(relais.ConnectError) as cm:
            self.connect(server)
        self.assertIn("during the handshake", str(cm.exception))
        with self.assertRaises(relais.Refused) as cm:
            self.connect(server)
        self.assertEqual((cm.exception.code, cm.exception.reason.name), (200, "UNKNOWN_200"))
        with self.assertRaises(relais.ConnectError) as cm:
            self.connect(server)
        self.assertIn("expected WELCOME, got JOINED", str(cm.exception))

    def test_connect_timeout(self) -> None:
        def script(n: int, hello: Hello, sock: socket.socket) -> None:
            time.sleep(1.0)  # never answers

        server = self.serve(script)
        started = time.monotonic()
        with self.assertRaises(relais.ConnectTimeout):
            self.connect(server, connect_timeout=0.3)
        self.assertLess(time.monotonic() - started, 0.9)


if __name__ == "__main__":
    unittest.main()
