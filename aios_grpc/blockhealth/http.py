"""The aggregator's HTTP face: ``GET /block/health/<block_id>``.

The standard library's ``ThreadingHTTPServer`` is enough here: one read-only JSON
endpoint, answered from Redis in a few milliseconds, polled by dashboards and
controllers — no routing, middleware or async I/O that would justify a web framework
as a dependency of every block.

Answers: 200 with the block's health (``healthy`` may be false), 404 for a block that
never published or an unknown path, 503 when Redis cannot be read, 500 when the
aggregator itself fails. Every body is JSON with ``success``.

The server is bounded against clients that connect and never finish
(``aios_grpc/_http.py``: idle connections closed after ``idle_timeout_s``, at most
``max_connections`` served at once, the rest answered 503 at once).
"""

from __future__ import annotations

import logging
import urllib.parse

import redis

from aios_grpc._http import BoundedHTTPServer, JSONHandler
from aios_grpc._text import quote
from aios_grpc.blockhealth.aggregator import Aggregator

log = logging.getLogger("aios_grpc.blockhealth")

PATH = "/block/health/"


class _Handler(JSONHandler):
    server: BlockHealthServer

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


class BlockHealthServer(BoundedHTTPServer):
    """The HTTP server of an ``Aggregator``; ``serve_in_thread()`` for tests and embedding."""

    thread_name = "aios-block-health"

    def __init__(
        self,
        aggregator: Aggregator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        idle_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        super().__init__((host, port), _Handler, idle_timeout_s=idle_timeout_s, max_connections=max_connections)
        self.aggregator = aggregator

    def serve_in_thread(self) -> BlockHealthServer:
        """Serve from a daemon thread; returns self."""
        super().serve_in_thread()
        return self

    def close(self) -> None:
        """Stop serving, release the port and the aggregator's connection."""
        super().close()
        self.aggregator.close()


__all__ = ["BlockHealthServer"]
