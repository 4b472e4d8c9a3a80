"""Helpers shared by the test packages: bounded waits and Redis Stream packets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aios_grpc._pb import pb


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def add_packets(client: Any, stream: str, n: int, *, prefix: str = "s", data: Any = None) -> None:
    """XADD ``n`` packets (sessions ``<prefix><i>``, seq_no 1) to a Redis Stream."""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        packet = pb.Packet(session_id=f"{prefix}{i}", seq_no=1, data=json.dumps(data or {"i": i}))
        pipe.xadd(stream, {"packet": packet.SerializeToString()})
    pipe.execute()


def stream_packets(client: Any, stream: str) -> list[pb.Packet]:
    """The packets in a Redis Stream, oldest first."""
    return [pb.Packet.FromString(fields[b"packet"]) for _, fields in client.xrange(stream)]


def result_sessions(client: Any, stream: str) -> list[str]:
    """Session ids of the packets in a Redis Stream, oldest first."""
    return [p.session_id for p in stream_packets(client, stream)]


def pending(client: Any, stream: str, group: str) -> int:
    """Entries of ``stream`` delivered to ``group`` and not acknowledged yet."""
    return int(client.xpending(stream, group)["pending"])


def redis_stream_target(port: int, stream: str) -> dict[str, Any]:
    """An ``output_ptr`` target that appends outputs to a Redis Stream on 127.0.0.1."""
    return {"host": "127.0.0.1", "port": port, "queue_name": stream, "transport": "redis-stream"}
