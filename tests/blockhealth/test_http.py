"""The block-health HTTP server against clients that connect and never finish (real sockets)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from aios_grpc.blockhealth import Aggregator, BlockHealthServer
from aios_grpc.blockhealth.settings import load_block_health_settings
from tests.helpers import wait_for


@pytest.fixture
def http_server(redis_server: Any) -> Iterator[Any]:
    started: list[BlockHealthServer] = []

    def start(**options: Any) -> BlockHealthServer:
        settings = load_block_health_settings(redis_url=redis_server.url, block_health_port=0)
        server = BlockHealthServer(Aggregator.from_settings(settings), "127.0.0.1", 0, **options).serve_in_thread()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def get_healthz(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_idle_connection_is_closed(http_server: Any) -> None:
    server = http_server(idle_timeout_s=0.5)
    with connect(server.port) as idle:
        wait_for(lambda: server.active == 1, 10, "the connection to be served")
        # Nothing sent: the server closes the connection (recv sees the end, not our 30 s timeout).
        assert idle.recv(1) == b""
    wait_for(lambda: server.active == 0, 10, "the connection's thread to end")
    # A half-sent request line stalls the same way.
    with connect(server.port) as stalled:
        stalled.sendall(b"GET /heal")
        assert stalled.recv(1) == b""
    assert get_healthz(server.port).startswith(b"HTTP/1.0 200")


def test_connections_past_the_bound_are_answered_503_without_a_thread(http_server: Any) -> None:
    server = http_server(idle_timeout_s=60.0, max_connections=2)
    first, second = connect(server.port), connect(server.port)
    try:
        wait_for(lambda: server.active == 2, 10, "both idle connections to be served")
        busy = get_healthz(server.port)
        assert busy.startswith(b"HTTP/1.0 503") and b"too many connections" in busy
        assert server.refused == 1 and server.active == 2
        first.close()  # one slot is free again once its thread sees the end
        wait_for(lambda: server.active == 1, 10, "the closed connection's thread to end")
        assert get_healthz(server.port).startswith(b"HTTP/1.0 200")
    finally:
        first.close()
        second.close()
