"""Parsing ``output_ptr``: which targets a block's outputs go to.

Three forms, all JSON text in the packet's ``output_ptr``:

- empty (``""``, ``{}``, ``null``): answer the caller on its own stream.
- ``{"outputs": [target, ...]}``: fan out to every target. The forwarded packets
  carry an empty pointer, so the next block answers its caller (the sender).
- ``{"is_graph": true, "graph": {"<block_id>": {"outputs": [...]}, "final": {...}}}``:
  the whole graph travels with the packet and each hop looks up its own block id.
  An entry may also be ``"final"`` (or ``{"final": true}``) to use the graph's
  ``final`` entry. A block id missing from the graph is an error: jumping to
  ``final`` silently would skip the rest of the graph. An entry may name its next
  targets by each output's ``status`` field: ``{"outputs": [default...], "on_status":
  {"<status>": {"outputs": [...]} or "final", ...}}``; an output whose ``status`` is
  not listed (or that has none) goes to ``outputs``, and an empty target list sends it
  back to the caller.

A target is ``{"host", "port", "queue_name", "block_id", "transport"}``:

==========================  ==========================================================
``transport``               delivery
==========================  ==========================================================
``"grpc"``                  a Process stream to ``host:port``
``"redis"``/``"redis-list"``  ``LPUSH queue_name`` on the Redis server ``host:port``
``"redis-stream"``          ``XADD queue_name * packet <bytes>`` on ``host:port``
absent (the original form)  ``port == 0``: gRPC to ``host`` (``host`` may carry
                            ``:port``; else port 50051); any other port: Redis list
==========================  ==========================================================

>>> plan = parse_output_ptr('{"outputs": [{"host": "b", "port": 6379, "queue_name": "q"}]}', "a")
>>> plan.targets[0].transport, plan.targets[0].address
('redis-list', 'b:6379')
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aios_grpc._text import quote
from aios_grpc.errors import InvalidPacket

GRPC = "grpc"
REDIS_LIST = "redis-list"
REDIS_STREAM = "redis-stream"
DEFAULT_GRPC_PORT = 50051
MAX_TARGETS = 64
"""Most targets one ``outputs`` list may name: each output is sent to every one of them."""
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*")
"""A DNS name: dot-separated labels of letters, digits, ``-`` and ``_``, as links take it."""
_TRANSPORTS = {
    "grpc": GRPC,
    "redis": REDIS_LIST,
    "redis-list": REDIS_LIST,
    "redis_list": REDIS_LIST,
    "list": REDIS_LIST,
    "redis-stream": REDIS_STREAM,
    "redis_stream": REDIS_STREAM,
    "stream": REDIS_STREAM,
}


@dataclass(frozen=True, slots=True)
class Target:
    """One destination of a block's outputs."""

    transport: str
    host: str
    port: int
    queue_name: str = ""
    block_id: str = ""

    @property
    def address(self) -> str:
        """``host:port``, the key the allow-list matches and links are pooled by."""
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """A short name for errors and logs (the caller's queue name escaped and cut)."""
        where = f"{self.transport}://{self.address}"  # the host is a checked name or IP literal
        if not self.queue_name:
            return where
        queue = self.queue_name
        return f"{where}/{queue}" if len(queue) <= 128 and queue.isprintable() else f"{where}/{quote(queue)}"


@dataclass(frozen=True, slots=True)
class Plan:
    """Where outputs go: ``targets`` (empty: back to the caller) and the pointer they carry."""

    targets: tuple[Target, ...]
    forward_ptr: str = ""
    # A graph entry's "on_status": an output's "status" -> its targets instead of ``targets``.
    by_status: dict[str, tuple[Target, ...]] = field(default_factory=dict)

    def targets_for(self, output: Any) -> tuple[Target, ...]:
        """The targets of one output packet (``by_status`` looked up by its data's ``status``)."""
        if not self.by_status:
            return self.targets
        status = _status_of(output.data)
        return self.targets if status is None else self.by_status.get(status, self.targets)

    @property
    def routes(self) -> bool:
        """Whether any output may go to a target (False: every output answers the caller)."""
        return bool(self.targets or self.by_status)


ANSWER_CALLER = Plan(())


def _bad(message: str) -> InvalidPacket:
    return InvalidPacket(f"output_ptr: {message}", stage="route")


def parse_target(raw: Any) -> Target:
    """A ``Target`` from one JSON object of an ``outputs`` list."""
    if not isinstance(raw, dict):
        raise _bad(f"a target must be a JSON object, got {quote(raw, 80)}")
    host = raw.get("host")
    if not isinstance(host, str) or not host:
        raise _bad(f"target {quote(raw, 80)} has no host")
    try:
        port = int(raw.get("port", 0) or 0)
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"target port {quote(raw.get('port'), 40)} is not a number") from None
    if not 0 <= port <= 65535:
        raise _bad(f"target port {port} is out of range")
    queue_name = raw.get("queue_name") or ""
    block_id = raw.get("block_id") or ""
    if not isinstance(queue_name, str) or not isinstance(block_id, str):
        raise _bad("queue_name and block_id must be strings")
    named = raw.get("transport")
    if named is None:
        transport = GRPC if port == 0 else REDIS_LIST
    elif isinstance(named, str) and named.lower() in _TRANSPORTS:
        transport = _TRANSPORTS[named.lower()]
    else:
        raise _bad(f"unknown transport {quote(named, 40)} (use grpc, redis-list or redis-stream)")
    if transport == GRPC and port == 0:
        head, sep, tail = host.rpartition(":")
        if sep and tail.isdigit() and len(tail) <= 5:
            host, port = head, int(tail)
            if not 0 < port <= 65535:
                raise _bad(f"target port {port} is out of range")
        else:
            port = DEFAULT_GRPC_PORT
    _check_host(host)
    if transport != GRPC:
        if port == 0:
            raise _bad(f"Redis target {quote(host)} needs a port")
        if not queue_name:
            raise _bad(f"Redis target {quote(host)}:{port} needs a queue_name")
    return Target(transport, host, port, queue_name, block_id)


def _status_of(data: Any) -> str | None:
    """The ``status`` field of an output's data (JSON text or a value), or None."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) else None


def _on_status(graph: dict[str, Any], entry: Any, where: str) -> dict[str, tuple[Target, ...]]:
    """An entry's ``on_status`` as status -> targets (``"final"`` takes the graph's final entry)."""
    table = entry.get("on_status") if isinstance(entry, dict) else None
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise _bad(f"{where}.on_status must be a JSON object of status -> entry")
    out: dict[str, tuple[Target, ...]] = {}
    for status, branch in table.items():
        if branch == "final":
            final = graph.get("final", {})
            out[status] = _targets(final, "graph.final") if final else ()
        else:
            out[status] = _targets(branch, f"{where}.on_status[{quote(status, 40)}]")
    return out


def _check_host(host: str) -> None:
    """``InvalidPacket`` unless ``host`` is a literal the links take as it is: a DNS name,
    an IPv4 address or a bracketed IPv6 address.

    Anything else (``unix:/path``, ``dns:///name``, ``ipv4:a,b``, a name with spaces)
    could make grpc read the target as another kind of address than the allow-list
    matched.
    """
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
            return
        except ValueError:
            pass
    elif len(host) <= 253 and _HOSTNAME.fullmatch(host):
        return
    raise _bad(f"target host {quote(host, 80)} is not a host name or an IP address")


def _targets(entry: Any, where: str) -> tuple[Target, ...]:
    if not isinstance(entry, dict):
        raise _bad(f"{where} must be a JSON object, got {quote(entry, 80)}")
    outputs = entry.get("outputs", [])
    if not isinstance(outputs, list):
        raise _bad(f"{where}.outputs must be a list")
    if len(outputs) > MAX_TARGETS:
        raise _bad(f"{where}.outputs names {len(outputs)} targets, more than {MAX_TARGETS}")
    return tuple(parse_target(t) for t in outputs)


def _next_blocks(graph: dict[str, Any], block_id: str) -> list[str]:
    """Block ids that ``block_id``'s entry sends to (targets that name one in the graph)."""
    entry = graph.get(block_id)
    if entry == "final" or (isinstance(entry, dict) and entry.get("final") is True):
        entry = graph.get("final")
    outputs = entry.get("outputs", []) if isinstance(entry, dict) else []
    if not isinstance(outputs, list):
        return []
    table = entry.get("on_status") if isinstance(entry, dict) else None
    if isinstance(table, dict):  # every branch counts for the cycle check
        for branch in table.values():
            more = branch.get("outputs") if isinstance(branch, dict) else None
            if isinstance(more, list):
                outputs = [*outputs, *more]
    found = (t.get("block_id") for t in outputs if isinstance(t, dict))
    return [b for b in found if isinstance(b, str) and b in graph and b != "final"]


def _check_acyclic(graph: dict[str, Any], start: str) -> None:
    """``InvalidPacket`` naming the loop when the graph leads from ``start`` back to a block on the way.

    Such a packet would travel round for ever (each hop waiting for the next one's
    answer); refusing it at the first hop costs one walk over a small graph.
    """
    on_path, done = 1, 2
    state = {start: on_path}
    path = [start]
    stack = [iter(_next_blocks(graph, start))]
    while stack:  # depth-first, without recursion: a long chain must not hit the recursion limit
        nxt = next(stack[-1], None)
        if nxt is None:
            state[path.pop()] = done
            stack.pop()
            continue
        seen = state.get(nxt)
        if seen == on_path:
            loop = [*path[path.index(nxt) :], nxt]
            shown = [b if len(b) <= 40 and b.isprintable() else quote(b, 40) for b in loop]
            if len(shown) > 10:
                shown = [*shown[:5], f"... ({len(shown) - 8} more)", *shown[-3:]]
            raise _bad(f"graph has a cycle: {' -> '.join(shown)}")
        if seen is None:
            state[nxt] = on_path
            path.append(nxt)
            stack.append(iter(_next_blocks(graph, nxt)))


def parse_output_ptr(output_ptr: str, block_id: str) -> Plan:
    """The ``Plan`` for a packet's ``output_ptr`` at block ``block_id``.

    Raises ``InvalidPacket`` naming what is wrong with the pointer.
    """
    text = output_ptr.strip() if output_ptr else ""
    if not text:
        return ANSWER_CALLER
    try:
        ptr = json.loads(text)
    except ValueError as exc:
        raise _bad(f"not JSON ({exc})") from None
    if ptr is None or ptr == {}:
        return ANSWER_CALLER
    if not isinstance(ptr, dict):
        raise _bad(f"must be a JSON object, got {type(ptr).__name__}")
    if not ptr.get("is_graph"):
        return Plan(_targets(ptr, "output_ptr"))
    graph = ptr.get("graph")
    if not isinstance(graph, dict):
        raise _bad("is_graph is set but graph is not a JSON object")
    if block_id not in graph:
        raise _bad(f"graph has no entry for block {block_id!r} (entries: {quote(sorted(graph))})")
    entry = graph[block_id]
    _check_acyclic(graph, block_id)
    if entry == "final" or (isinstance(entry, dict) and entry.get("final") is True):
        final = graph.get("final", {})
        targets = _targets(final, "graph.final") if final else ()
        by_status: dict[str, tuple[Target, ...]] = {}
    else:
        targets = _targets(entry, f"graph[{block_id!r}]")
        by_status = _on_status(graph, entry, f"graph[{block_id!r}]")
    # The whole graph travels on, so that the next hop finds its own entry.
    return Plan(targets, text, by_status) if targets or by_status else ANSWER_CALLER


__all__ = [
    "ANSWER_CALLER",
    "DEFAULT_GRPC_PORT",
    "GRPC",
    "MAX_TARGETS",
    "REDIS_LIST",
    "REDIS_STREAM",
    "Plan",
    "Target",
    "parse_output_ptr",
    "parse_target",
]
