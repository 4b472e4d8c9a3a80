"""``BlockHTTP``: the original SDK's HTTP endpoints, on an optional port (``AIOS_HTTP_PORT``).

Scripts and executors written for the original SDK call these; they answer the
original shapes, every body JSON with ``success``:

- ``GET /health``: ``{"success": true, "data": <the last health() value>}``; 503 with
  ``success: false`` and the ``message`` when the instance is NOT_SERVING (starting,
  unhealthy, stalled or draining: the gRPC health verdict).
- ``POST /setParameters`` with a JSON object: applied through ``on_update`` as
  ``SetParameters`` is (and broadcast to the other instances when Redis is configured);
  ``{"success": true, "data": <the parameters applied>}``.
- ``POST /mgmt`` with ``{"mgmt_action": "...", "mgmt_data": {...}}``: the block's
  ``management`` (or an SDK action such as ``aios.health``); ``{"success": true,
  "data": <its result>}``.

Errors answer ``{"success": false, "message": ...}`` with 400 (bad JSON, parameters
refused), 401/403 (token), 404 (path, or an unknown management action), 405
(method), 413 (body over ``AIOS_MAX_MESSAGE_BYTES``), 500 (the block raised), 503
(not ready yet). The three endpoints take the control-plane tokens of the gRPC control
plane (``authorization: Bearer <token>``, ``service/auth.py``); open when no tokens are
configured, as the gRPC control plane is.

The standard library's threading HTTP server is enough for three low-rate endpoints
(``aios_grpc/_http.py``, bounded as the block-health endpoint is); the work itself runs
on the server's event loop, as a gRPC call's would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Coroutine
from typing import Any

import grpc

from aios_grpc._http import BoundedHTTPServer, JSONHandler
from aios_grpc._text import cut, quote
from aios_grpc.errors import AiosError

log = logging.getLogger("aios_grpc.http")

_CONTROL = {
    "/health": "/aios.block.v1.BlockService/GetInfo",
    "/setParameters": "/aios.block.v1.BlockService/SetParameters",
    "/mgmt": "/aios.block.v1.BlockService/Management",
}
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
}
CALL_TIMEOUT_S = 60.0
"""How long a request waits for ``on_update`` or ``management`` before answering 503."""


class _Handler(JSONHandler):
    server: BlockHTTP

    def do_GET(self) -> None:
        path = self._allowed("GET")
        if path is None:
            return
        health = self.server.block.health
        if health.serving:
            self._send(200, {"success": True, "data": health.last_report})
        else:
            self._send(503, {"success": False, "data": health.last_report, "message": health.reason})

    def do_POST(self) -> None:
        path = self._allowed("POST")
        if path is None:
            return
        body = self._body()
        if body is None:
            return
        control = self.server.block.control
        if control is None:
            self._send(503, {"success": False, "message": "block is starting: its __init__ has not finished"})
            return
        if path == "/setParameters":
            if not isinstance(body, dict):
                self._fail(400, f"the body must be a JSON object of parameters, got {type(body).__name__}")
                return
            self._call(control.set_parameters(body), lambda done: done[0], "setParameters")
            return
        if not isinstance(body, dict) or not isinstance(body.get("mgmt_action"), str):
            self._fail(400, 'the body must be {"mgmt_action": "<action>", "mgmt_data": {...}}')
            return
        data = body.get("mgmt_data") or {}
        if not isinstance(data, dict):
            self._fail(400, f"mgmt_data must be a JSON object, got {type(data).__name__}")
            return
        action = body["mgmt_action"]
        self._call(control.management(action, data), lambda result: result, f"management({quote(action)})")

    def _allowed(self, method: str) -> str | None:
        """The path when it exists for ``method`` and the caller's token may call it; else answered."""
        path = urllib.parse.urlsplit(self.path).path
        rpc = _CONTROL.get(path)
        if rpc is None:
            self._fail(404, f"no such path {quote(path)}; use /health, /setParameters or /mgmt")
            return None
        if (method == "GET") != (path == "/health"):
            self._fail(405, f"{quote(path)} takes {'GET' if path == '/health' else 'POST'}")
            return None
        auth = self.server.block.auth
        if auth is not None:
            header = self.headers.get("authorization")
            refused = auth.decide(rpc, [("authorization", header)] if header is not None else [])
            if refused is not None:
                self._fail(_HTTP_STATUS.get(refused[0], 403), refused[1])
                return None
        return path

    def _body(self) -> Any:
        """The request's JSON body, or None once answered with the error."""
        limit = self.server.max_body_bytes
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            self._fail(400, "Content-Length is not a number")
            return None
        if length > limit:
            self._fail(413, f"the body is {length} bytes, over the limit of {limit} (AIOS_MAX_MESSAGE_BYTES)")
            return None
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, RecursionError) as exc:
            self._fail(400, f"the body is not JSON: {exc}")
            return None

    def _call(self, coro: Coroutine[Any, Any, Any], pick: Any, what: str) -> None:
        """Run ``coro`` on the server's loop and answer ``pick(result)`` or the error."""
        future = asyncio.run_coroutine_threadsafe(coro, self.server.loop)
        try:
            result = future.result(CALL_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            self._fail(503, f"{what} took longer than {CALL_TIMEOUT_S:g}s")
            return
        except AiosError as exc:
            self._fail(_HTTP_STATUS.get(exc.code, 500), str(exc))
            return
        except Exception as exc:
            self._fail(500, f"{what} raised {type(exc).__name__}: {exc}")
            return
        try:
            self._send(200, {"success": True, "data": pick(result)})
        except (TypeError, ValueError) as exc:
            self._fail(500, f"{what} returned a value that is not JSON: {exc}")

    def _fail(self, status: int, message: str) -> None:
        self._send(status, {"success": False, "message": cut(message)})


class BlockHTTP(BoundedHTTPServer):
    """The HTTP endpoints of one ``BlockServer`` (``block``), served from a daemon thread."""

    thread_name = "aios-block-http"

    def __init__(self, block: Any, host: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__((host, port), _Handler)
        self.block = block
        self.loop = loop
        self.max_body_bytes = int(block.settings.max_message_bytes)


__all__ = ["BlockHTTP"]
