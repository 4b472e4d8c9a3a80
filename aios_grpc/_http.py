"""``BoundedHTTPServer``: the standard library's threading HTTP server, bounded against
clients that connect and never finish; shared by the block-health aggregator's endpoint
and the block's optional HTTP port.

A connection that sends nothing for ``idle_timeout_s`` is closed (``JSONHandler`` sets
the socket timeout), and at most ``max_connections`` are served at once, one thread
each; past that a new connection is answered 503 at once and closed, from the accepting
thread, without a thread of its own.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aios_grpc._text import quote

log = logging.getLogger("aios_grpc.http")

_BUSY = json.dumps({"success": False, "error": "too many connections; try again"}).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY)).encode() + b"\r\nConnection: close\r\n\r\n" + _BUSY
)


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler that answers JSON and times idle connections out."""

    server: BoundedHTTPServer

    def setup(self) -> None:
        super().setup()
        # Every read that waits longer (an idle or stalled client) ends the connection:
        # handle_one_request takes the timeout as the end of the request.
        self.connection.settimeout(self.server.idle_timeout_s)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), quote(format % args))


class BoundedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` with the bounds of the module docstring; ``serve_in_thread()``."""

    daemon_threads = True
    thread_name = "aios-http"

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[JSONHandler],
        *,
        idle_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        super().__init__(address, handler)
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

    def serve_in_thread(self) -> Any:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()


__all__ = ["BoundedHTTPServer", "JSONHandler"]
