"""The aggregator's HTTP face: ``GET /block/health/<block_id>``.

The standard library's ``ThreadingHTTPServer`` is enough here: one read-only JSON
endpoint, answered from Redis in a few milliseconds, polled by dashboards and
controllers — no routing, middleware or async I/O that would justify a web framework
as a dependency of every block.

Answers: 200 with the block's health (``healthy`` may be false), 404 for a block that
never published or an unknown path, 503 when Redis cannot be read, 500 when the
aggregator itself fails. Every body is JSON with ``success``.

The server is bounded against clients that connect and never finish: a connection
that sends nothing for ``idle_timeout_s`` is closed (the handler's socket timeout), and
at most ``max_connections`` are served at once, one thread each; past that a new
connection is answered 503 at once and closed, from the accepting thread, without a
thread of its own.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from aios_grpc._text import quote
from aios_grpc.blockhealth.aggregator import Aggregator

log = logging.getLogger("aios_grpc.blockhealth")

PATH = "/block/health/"


_BUSY = json.dumps({"success": False, "error": "too many connections; try again"}).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY)).encode() + b"\r\nConnection: close\r\n\r\n" + _BUSY
)


class _Handler(BaseHTTPRequestHandler):
    server: BlockHealthServer

    def setup(self) -> None:
        super().setup()
        # Every read that waits longer (an idle or stalled client) ends the connection:
        # handle_one_request takes the timeout as the end of the request.
        self.connection.settimeout(self.server.idle_timeout_s)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, {"success": True})
            return
        if not path.startswith(PATH) or len(path) == len(PATH):
            self._send(404, {"success": False, "error": f"no such path {quote(path)}; use {PATH}<block_id>"})
            return
        block_id = urllib.parse.unquote(path[len(PATH) :])
        try:
            answer = self.server.aggregator.block_health(block_id)
        except (redis.RedisError, OSError) as exc:
            self._send(503, {"block_id": block_id, "success": False, "error": f"cannot read heartbeats: {exc}"})
            return
        except Exception as exc:
            log.exception("block health of %s failed", quote(block_id))
            self._send(500, {"block_id": block_id, "success": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        if answer is None:
            self._send(404, {"block_id": block_id, "success": False, "error": f"unknown block {quote(block_id)}"})
            return
        self._send(200, answer)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), quote(format % args))


class BlockHealthServer(ThreadingHTTPServer):
    """The HTTP server of an ``Aggregator``; ``serve_in_thread()`` for tests and embedding."""

    daemon_threads = True

    def __init__(
        self,
        aggregator: Aggregator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        idle_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.aggregator = aggregator
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active_lock = threading.Lock()
        self.active = 0
        """Connections being served now (each on its own thread)."""
        self.refused = 0
        """Connections answered 503 because ``max_connections`` were being served."""
        self._thread: threading.Thread | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve ``request`` on a thread of its own, or answer 503 when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.setblocking(False)  # a fresh socket's send buffer takes this at once
                request.send(_BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._active_lock:
            self.active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._active_lock:
            self.active -= 1
        self._slots.release()

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def serve_in_thread(self) -> BlockHealthServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="aios-block-health", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()
        self.aggregator.close()


__all__ = ["BlockHealthServer"]
