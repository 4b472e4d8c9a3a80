"""Helpers shared by the test packages: bounded waits and Redis Stream packets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
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


def rss(pid: int) -> int:
    """The resident set of process ``pid`` in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def stable_rss(pid: int, timeout: float = 60.0) -> int:
    """RSS of ``pid`` once it stopped growing (by 1 MiB) for 1.5 s, or at ``timeout``."""
    end = time.monotonic() + timeout
    last, since = rss(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.2)
        now = rss(pid)
        if now > last + 1024 * 1024:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 1.5:
            return now
    return rss(pid)
