"""The wire format against the byte examples of PROTOCOL.md and
spec-resume.md, and the client-side name check. No server needed."""

from __future__ import annotations

import pickle
import unittest

import support  # noqa: F401  (puts the package on the path)

import relais
from relais import protocol as p
from relais.protocol import CloseReason, RefuseReason


def hx(s: str) -> bytes:
    return bytes.fromhex(s)


def body(frame: bytes) -> bytes:
    d = p.FrameDecoder()
    d.feed(frame)
    b = d.next_frame()
    assert b is not None and d.buffered == 0
    return b


class EncodingTest(unittest.TestCase):
    def test_hello_examples(self) -> None:
        # PROTOCOL.md 5.1
        self.assertEqual(
            p.encode_hello("al", "r", echo=True), hx("00 00 00 09 01 00 01 01 02 61 6c 01 72")
        )
        self.assertEqual(
            p.encode_hello("bob", "", echo=False), hx("00 00 00 09 01 00 01 00 03 62 6f 62 00")
        )
        self.assertEqual(
            p.encode_hello("al", "r", echo=False, token="t.k"),
            hx("00 00 00 0e 01 00 01 02 02 61 6c 01 72 00 03 74 2e 6b"),
        )
        # PROTOCOL.md 15
        self.assertEqual(
            p.encode_hello("alice", "arena"),
            hx("00 00 00 10 01 00 01 01 05 61 6c 69 63 65 05 61 72 65 6e 61"),
        )

    def test_hello_with_resume_as_in_the_spec(self) -> None:
        self.assertEqual(
            p.encode_hello("al", "r", echo=True, resume=""),
            hx("00 00 00 0a 01 00 01 05 02 61 6c 01 72 00"),
        )
        self.assertEqual(
            p.encode_hello("al", "r", echo=False, token="t.k", resume="RT"),
            hx("00 00 00 11 01 00 01 06 02 61 6c 01 72 00 03 74 2e 6b 02 52 54"),
        )

    def test_client_frames(self) -> None:
        self.assertEqual(p.encode_data(b"hi"), hx("00 00 00 03 02 68 69"))
        self.assertEqual(p.encode_data(b"x=1"), hx("00 00 00 04 02 78 3d 31"))
        self.assertEqual(p.encode_goodbye(), hx("00 00 00 02 12 00"))
        self.assertEqual(p.GOODBYE_NORMAL_BYTES, hx("00 00 00 02 12 00"))
        self.assertEqual(p.PING_BYTES, hx("00 00 00 01 10"))
        self.assertEqual(p.PONG_BYTES, hx("00 00 00 01 11"))
        self.assertEqual(p.LIST_ROOMS_BYTES, hx("00 00 00 01 03"))
        self.assertEqual(p.MAX_HELLO_LEN, 2249)
        self.assertEqual(p.MAX_FRAME_LEN, 65792)


class DecodingTest(unittest.TestCase):
    def test_welcome(self) -> None:
        w = p.decode_server_frame(body(hx("00 00 00 0e 81 00 01 00 01 00 00 01 72 00 01 02 61 6c")))
        self.assertEqual(w, p.Welcome(1, 65536, "r", ["al"], None, None))
        w = p.decode_server_frame(
            body(
                hx(
                    "00 00 00 19 81 00 01 00 01 00 00 05 61 72 65 6e 61 00 02 05 61 6c 69 63 65"
                    " 03 62 6f 62"
                )
            )
        )
        self.assertEqual(w.members, ["alice", "bob"])

    def test_welcome_with_resume_as_in_the_spec(self) -> None:
        w = p.decode_server_frame(
            body(hx("00 00 00 12 81 00 01 00 01 00 00 01 72 00 01 02 61 6c 01 02 52 54"))
        )
        self.assertEqual(w, p.Welcome(1, 65536, "r", ["al"], True, "RT"))
        fresh = hx("81 00 01 00 01 00 00 01 72 00 01 02 61 6c 00 02 52 54")
        self.assertIs(p.decode_server_frame(fresh).resumed, False)
        with self.assertRaises(p.ProtocolViolation):  # not ASCII
            p.decode_server_frame(hx("81 00 01 00 01 00 00 01 72 00 01 02 61 6c 00 01 c3"))
        with self.assertRaises(p.ProtocolViolation):  # longer than 64
            p.decode_server_frame(
                hx("81 00 01 00 01 00 00 01 72 00 01 02 61 6c 00 41") + b"a" * 65
            )

    def test_the_worked_session_decodes(self) -> None:
        # PROTOCOL.md 15, every server frame.
        frames = {
            "00 00 00 0a 83 05 61 6c 69 63 65 78 3d 31": p.MessageFrame("alice", b"x=1"),
            "00 00 00 05 84 03 62 6f 62": p.JoinedFrame("bob"),
            "00 00 00 08 83 03 62 6f 62 79 3d 37": p.MessageFrame("bob", b"y=7"),
            "00 00 00 01 10": p.PING_FRAME,
            "00 00 00 0c 82 01 6e 61 6d 65 20 74 61 6b 65 6e": p.Refused(
                RefuseReason.NAME_TAKEN, "name taken"
            ),
            "00 00 00 02 12 00": p.Goodbye(CloseReason.NORMAL, ""),
            "00 00 00 06 85 00 03 62 6f 62": p.LeftFrame("bob", CloseReason.NORMAL),
            "00 00 00 0e 86 00 00 01 05 61 72 65 6e 61 00 00 00 01": p.RoomListFrame(
                [p.RoomInfo("arena", 1)], False
            ),
            "00 00 00 02 12 01": p.Goodbye(CloseReason.SERVER_SHUTDOWN, ""),
            "00 00 00 04 86 00 00 00": p.RoomListFrame([], False),
            "00 00 00 15 12 03 68 61 6e 64 73 68 61 6b 65 20 74 69 6d 65 64 20 6f 75 74": p.Goodbye(
                CloseReason.TIMEOUT, "handshake timed out"
            ),
        }
        for frame, expected in frames.items():
            self.assertEqual(p.decode_server_frame(body(hx(frame))), expected, frame)

    def test_frames_split_and_merged(self) -> None:
        stream = hx("00 00 00 05 84 03 62 6f 62 00 00 00 01 10 00 00 00 03 83 01 61")
        d = p.FrameDecoder()
        got = []
        for i in range(len(stream)):  # one byte at a time
            d.feed(stream[i : i + 1])
            got.extend(d.frames())
        self.assertEqual(got, [hx("84 03 62 6f 62"), hx("10"), hx("83 01 61")])
        self.assertEqual(d.buffered, 0)
        d.feed(hx("00 00 00 03 83"))
        self.assertEqual(list(d.frames()), [])
        self.assertEqual(d.buffered, 5)  # end of stream now: inside a frame

    def test_strictness(self) -> None:
        bad = [
            "84 03 62 6f",  # truncated
            "84 03 62 6f 62 00",  # trailing byte
            "84 02 c3 28",  # invalid UTF-8
            "10 00",  # PING with a byte
            "85 00",  # LEFT without a name
            "12",  # GOODBYE without its reason
            "99",  # unknown type
            "02 00",  # a client type
        ]
        for b in bad:
            with self.assertRaises(p.ProtocolViolation, msg=b):
                p.decode_server_frame(hx(b))
        d = p.FrameDecoder()
        d.feed(hx("00 00 00 00"))
        with self.assertRaises(p.ProtocolViolation):
            d.next_frame()
        d = p.FrameDecoder()
        d.feed(hx("00 01 01 01"))  # 65,793 > MAX_FRAME_LEN, refused before the body
        with self.assertRaises(p.ProtocolViolation):
            d.next_frame()
        d = p.FrameDecoder()
        d.feed(hx("00 01 01 00"))  # 65,792: allowed, waits for the body
        self.assertIsNone(d.next_frame())

    def test_unknown_codes_are_tolerated(self) -> None:
        left = p.decode_server_frame(hx("85 63 03 62 6f 62"))
        self.assertEqual(left.reason, 99)
        self.assertEqual(left.reason.name, "UNKNOWN_99")
        self.assertFalse(left.reason.known)
        refused = p.decode_server_frame(hx("82 c8 6e 6f"))
        self.assertEqual(refused.reason, 200)
        self.assertIsInstance(refused.reason, RefuseReason)
        self.assertEqual(RefuseReason(14), RefuseReason.RESUME_INVALID)
        self.assertTrue(RefuseReason.RESUME_INVALID.known)
        self.assertEqual(RefuseReason(15), RefuseReason.CLUSTER_UNAVAILABLE)
        self.assertEqual(RefuseReason(15).describe(), "cluster unavailable")
        self.assertFalse(RefuseReason(16).known)
        self.assertEqual(CloseReason.LEFT_WHILE_AWAY, 255)

    def test_errors_pickle_and_describe(self) -> None:
        e = relais.Refused(RefuseReason.NAME_TAKEN, "name taken")
        self.assertIn("name taken", str(e))
        self.assertEqual(e.code, 1)
        e2 = pickle.loads(pickle.dumps(e))
        self.assertEqual((e2.reason, e2.text), (e.reason, e.text))
        d = relais.Disconnected(relais.DisconnectKind.GOODBYE, "", reason=CloseReason(1))
        self.assertIn("server shutting down", str(d))
        self.assertEqual(pickle.loads(pickle.dumps(d)).reason, CloseReason.SERVER_SHUTDOWN)
        self.assertTrue(issubclass(relais.ConnectTimeout, TimeoutError))
        self.assertTrue(issubclass(relais.InvalidName, relais.ConnectError))


class NamesTest(unittest.TestCase):
    def test_valid_names_in_nfc(self) -> None:
        self.assertEqual(relais.validate_name("alice"), "alice")
        self.assertEqual(relais.validate_name("e\u0301"), "\u00e9")
        self.assertEqual(relais.validate_name("Zoë the 2nd"), "Zoë the 2nd")
        self.assertEqual(relais.validate_name("игрок"), "игрок")
        self.assertEqual(relais.validate_name("a" * 64), "a" * 64)
        # 32 decomposed accents are 96 bytes, 64 once composed.
        self.assertEqual(relais.validate_name("e\u0301" * 32), "\u00e9" * 32)
        self.assertEqual(relais.validate_room(None), "")
        self.assertEqual(relais.validate_room(""), "")

    def test_invalid_names(self) -> None:
        cases = {
            "": "name is empty",
            "a" * 65: "name is 65 bytes long, the maximum is 64",
            "\u00e9" * 33: "name is 66 bytes long, the maximum is 64",
            "bad\nname": "name contains a control character (U+000A)",
            "a\x1bb": "name contains a control character (U+001B)",
            "a\u2028b": "name contains a control character (U+2028)",
            "ab\u202e": "name contains a bidirectional control (U+202E)",
            "a\u200bb": "name contains an invisible character (U+200B)",
            "a\u00adb": "name contains an invisible character (U+00AD)",
            "\u2764\ufe0f": "name contains an invisible character (U+FE0F)",
            "a\ue000": "name contains a private-use code point (U+E000)",
            "a\ufffe": "name contains an unassigned code point (U+FFFE)",
            "   ": "name has no visible character",
            "\u0301": "name has no visible character",
            "\u2800": "name has no visible character",
            " alice": "name starts or ends with whitespace",
            "alice\u00a0": "name starts or ends with whitespace",
            "a\ud800": "name is not valid UTF-8",
        }
        for name, problem in cases.items():
            with self.assertRaises(relais.InvalidName, msg=repr(name)) as cm:
                relais.validate_name(name)
            self.assertEqual(cm.exception.problem, problem, repr(name))
        with self.assertRaises(relais.InvalidRoom):
            relais.validate_room(" arena")


if __name__ == "__main__":
    unittest.main()
