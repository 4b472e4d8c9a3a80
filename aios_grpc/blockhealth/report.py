"""What an instance publishes (a heartbeat) and how it is laid out in Redis.

Keys, under a prefix (``AIOS_HEARTBEAT_PREFIX``, default ``aios:blockhealth``):

- ``<prefix>:blocks`` — a set of the block ids that ever published.
- ``<prefix>:<block_id>:instances`` — a sorted set: instance id -> unix time of its
  last heartbeat. An instance that stopped cleanly removes itself.
- ``<prefix>:<block_id>:<instance_id>`` — the last heartbeat (JSON), expiring after a
  few intervals, so an instance that died is seen as *missing*: still in the index,
  with no report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def blocks_key(prefix: str) -> str:
    """The set of block ids."""
    return f"{prefix}:blocks"


def instances_key(prefix: str, block_id: str) -> str:
    """The sorted set of a block's instances by last heartbeat time."""
    return f"{prefix}:{block_id}:instances"


def report_key(prefix: str, block_id: str, instance_id: str) -> str:
    """The last heartbeat of one instance."""
    return f"{prefix}:{block_id}:{instance_id}"


@dataclass
class InstanceReport:
    """One instance as the aggregator sees it: its last heartbeat, or that it is missing.

    ``history`` holds ``(unix time, packets answered, packets failed)`` samples, one per
    heartbeat, oldest first (cumulative totals), for policies that look at a window.
    ``health`` is the last value of the block's ``health()``.
    """

    instance_id: str
    block_id: str
    heartbeat_at: float
    present: bool = True
    healthy: bool = False
    reason: str = ""
    started_at: float = 0.0
    last_packet_at: float = 0.0
    load: dict[str, float] = field(default_factory=dict)
    packets: dict[str, float] = field(default_factory=dict)
    history: list[tuple[float, float, float]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    health: Any = None
    """The last value the block's own ``health()`` returned (JSON), for policies on a
    block's reported figures (a GPU temperature, a queue length)."""

    def age(self, now: float) -> float:
        """Seconds since the last heartbeat."""
        return max(0.0, now - self.heartbeat_at)

    def to_json(self) -> str:
        """The heartbeat as published."""
        return json.dumps(
            {
                "instanceId": self.instance_id,
                "blockId": self.block_id,
                "ts": self.heartbeat_at,
                "healthy": self.healthy,
                "reason": self.reason,
                "startedAt": self.started_at,
                "lastPacketAt": self.last_packet_at,
                "load": self.load,
                "packets": self.packets,
                "history": [list(h) for h in self.history],
                "health": self.health,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes, block_id: str, instance_id: str, indexed_at: float) -> InstanceReport:
        """Parse a published heartbeat; a report that does not parse is an unhealthy instance."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls(
                instance_id=instance_id,
                block_id=block_id,
                heartbeat_at=float(data.get("ts", indexed_at)),
                healthy=bool(data.get("healthy", False)),
                reason=str(data.get("reason", "")),
                started_at=float(data.get("startedAt", 0.0)),
                last_packet_at=float(data.get("lastPacketAt", 0.0)),
                load={str(k): float(v) for k, v in dict(data.get("load") or {}).items()},
                packets={str(k): float(v) for k, v in dict(data.get("packets") or {}).items()},
                history=[(float(t), float(a), float(f)) for t, a, f in data.get("history") or ()],
                raw=data,
                health=data.get("health"),
            )
        except (TypeError, ValueError) as exc:
            return cls(instance_id, block_id, indexed_at, healthy=False, reason=f"heartbeat does not parse: {exc}")


__all__ = ["InstanceReport", "blocks_key", "instances_key", "report_key"]
