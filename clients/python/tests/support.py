"""What the tests share: the real ``relais`` server binary on a free port,
killed at the end of each test, and bounded waits.

The binary is ``$RELAIS_BIN``, else ``target/debug/relais`` at the
repository root. If it is missing, every test that needs it fails with a
message saying how to build it (none is skipped).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, List, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
try:
    import relais
except ImportError:  # not installed and not on PYTHONPATH: the source tree's
    sys.path.insert(0, str(HERE.parent / "src"))
    import relais

#: Upper bound on any one wait: a guard against hangs, never a way to wait
#: for something to happen.
PATIENCE = 15.0


def relais_bin() -> Path:
    env = os.environ.get("RELAIS_BIN")
    return Path(env) if env else REPO_ROOT / "target" / "debug" / "relais"


def require_bin() -> Path:
    path = relais_bin()
    if not path.is_file() or not os.access(str(path), os.X_OK):
        raise AssertionError(
            "the relais server binary is missing: %s is not an executable file. Build it with "
            "`cargo build -p relais-cli` (then it is target/debug/relais, or "
            "$CARGO_TARGET_DIR/debug/relais), or point RELAIS_BIN at it." % path
        )
    return path


_resume_support: Optional[bool] = None


def server_has_resume() -> bool:
    """Whether the binary knows ``--resume-grace`` (the server side of
    resume, spec-resume.md)."""
    global _resume_support
    if _resume_support is None:
        out = subprocess.run(
            [str(require_bin()), "serve", "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=PATIENCE,
        ).stdout.decode("utf-8", "replace")
        _resume_support = "--resume-grace" in out
    return _resume_support


def _pump(stream, lines: "queue.Queue[str]", log: List[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        log.append(line)
        lines.put(line)
    stream.close()


class Server:
    """``relais serve`` on 127.0.0.1 (``port`` 0: a free one), with
    ``extra`` flags. Its TCP port is :attr:`port`."""

    def __init__(self, *extra: str, port: int = 0) -> None:
        self.extra = extra
        self.log: List[str] = []
        deadline = time.monotonic() + PATIENCE
        while True:
            self._start(port)
            found = self._port_from_stdout(deadline)
            if found is not None:
                self.port = found
                return
            # A restart on a fixed port can race the old process's exit.
            self.kill()
            if port == 0 or time.monotonic() > deadline:
                raise AssertionError("relais serve did not start:\n" + self.output())
            time.sleep(0.05)

    def _start(self, port: int) -> None:
        args = [str(require_bin()), "serve", "--listen", "127.0.0.1:%d" % port]
        args += ["--ws-listen", "127.0.0.1:0", *self.extra]
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.stdout: "queue.Queue[str]" = queue.Queue()
        stderr: "queue.Queue[str]" = queue.Queue()
        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, stderr)):
            threading.Thread(target=_pump, args=(stream, lines, self.log), daemon=True).start()

    def _port_from_stdout(self, deadline: float) -> Optional[int]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.stdout.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self.stdout.empty():
                    return None
                continue
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])

    def output(self) -> str:
        return "--- relais serve %s output:\n%s\n---" % (" ".join(self.extra), "\n".join(self.log))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (also ends a stopped process) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PATIENCE)

    def terminate(self) -> None:
        """SIGTERM: a graceful shutdown (every client gets GOODBYE 1); waits
        for the exit."""
        self.signal(signal.SIGTERM)
        self.proc.wait(PATIENCE)

    def restart(self) -> "Server":
        """A new server with the same flags on the same port (this one must
        have exited)."""
        return Server(*self.extra, port=self.port)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Polls ``predicate`` (every 10 ms) until it holds; fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.3g s waiting for %s" % (timeout, what))
        time.sleep(0.01)


class ServerTest(unittest.TestCase):
    """A test with its own server (``server_args``), killed at the end."""

    server_args: tuple = ()

    def setUp(self) -> None:
        self.server = self.start_server(*self.server_args)

    def start_server(self, *args: str, port: int = 0) -> Server:
        server = Server(*args, port=port)
        self.addCleanup(server.kill)
        return server

    def restart(self, server: Server) -> Server:
        server.kill()
        new = server.restart()
        self.addCleanup(new.kill)
        return new

    def client(self, name: str, room: Optional[str] = None, **kwargs) -> relais.Client:
        c = relais.Client.connect("127.0.0.1", self.server.port, name, room, **kwargs)
        self.addCleanup(c.close)
        return c

    def require_resume(self) -> None:
        if not server_has_resume():
            self.fail(
                "this relais binary (%s) has no resume support: `relais serve --help` does not "
                "list --resume-grace. The server side of spec-resume.md is not merged yet; this "
                "test passes once it is." % relais_bin()
            )

    def next_event(self, client: relais.Client, timeout: float = PATIENCE):
        try:
            return client.recv_event(timeout)
        except TimeoutError:
            raise AssertionError("%s received no event within %.3g s" % (client.name, timeout))

    def next_message(self, client: relais.Client, timeout: float = PATIENCE) -> relais.Message:
        try:
            return client.recv(timeout)
        except TimeoutError:
            raise AssertionError("%s received no message within %.3g s" % (client.name, timeout))

    def assert_quiet(self, client: relais.Client) -> None:
        """Nothing is waiting in ``client``'s receive queue."""
        self.assertIsNone(client.poll_event())
