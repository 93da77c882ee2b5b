"""TLS: the server with a certificate from a test CA (made with Debian's
``openssl`` command, as e2e/wss.test.mjs does), clients verifying it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import unittest
from pathlib import Path

from support import PATIENCE, ServerTest

import relais
import relais.aio
from relais import Message, State


def make_certificates(d: Path) -> None:
    if shutil.which("openssl") is None:
        raise AssertionError("the TLS tests need the openssl command (Debian: openssl)")

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=d, check=True, timeout=PATIENCE,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=relais python test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", *ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "server.ext")


class TlsTest(ServerTest):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        make_certificates(self.dir)
        self.server_args = (
            "--tls-cert", str(self.dir / "cert.pem"), "--tls-key", str(self.dir / "key.pem")
        )
        super().setUp()
        self.context = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))

    def test_tls_sync_and_asyncio(self) -> None:
        port = self.server.port
        alice = self.client("alice", tls=self.context)
        alice.send("over tls")
        self.assertEqual(self.next_message(alice), Message("alice", b"over tls"))
        self.assertEqual(relais.list_rooms("127.0.0.1", port, tls=self.context),
                         [relais.RoomInfo("lobby", 1)])

        async def main():
            async with relais.aio.connect("127.0.0.1", port, "bob", tls=self.context) as bob:
                self.assertEqual(bob.members, ["alice", "bob"])
                self.assertEqual(
                    await relais.aio.list_rooms("127.0.0.1", port, tls=self.context),
                    [relais.RoomInfo("lobby", 2)],
                )

        asyncio.run(asyncio.wait_for(main(), PATIENCE))

    def test_tls_untrusted_and_plaintext_are_connect_errors(self) -> None:
        with self.assertRaises(relais.ConnectError) as cm:
            relais.Client.connect("127.0.0.1", self.server.port, "eve", tls=True)
        self.assertIn("TLS", str(cm.exception))
        # A plaintext client on a TLS port: no WELCOME, an error, no hang.
        with self.assertRaises(relais.ConnectError) as cm:
            relais.Client.connect("127.0.0.1", self.server.port, "eve", connect_timeout=3)
        self.assertIn("speaks TLS", str(cm.exception))

    def test_tls_reconnect(self) -> None:
        alice = self.client("alice", tls=self.context)
        self.server.terminate()
        self.assertTrue(alice.wait_state(State.RECONNECTING, PATIENCE))
        self.server = self.restart(self.server)
        self.assertTrue(alice.wait_state(State.CONNECTED, PATIENCE), alice.state)
        alice.send("back")
        self.assertEqual(self.next_message(alice), Message("alice", b"back"))


if __name__ == "__main__":
    unittest.main()
