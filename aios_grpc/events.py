"""``BlockEvents`` and ``BlockSideCars``: pushes from a block to outside consumers.

Both push onto named queues through a ``ListQueue`` (in memory by default, a Redis
list in production). Failures are logged and returned as False, never raised into
the block's processing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from aios_grpc.adapters.list_queue import ListQueue, MemoryListQueue

log = logging.getLogger("aios_grpc.events")

EVENTS_QUEUE = "EVENTS_QUEUE"
SIDECAR_INPUTS = "INPUTS"


class _Serializable(Protocol):
    def SerializeToString(self) -> bytes: ...


class BlockEvents:
    """Push structured events to ``EVENTS_QUEUE`` (consumed by the cluster controller).

    >>> events = BlockEvents(block_id="b1")
    >>> events.push_event("inference_started", {"session_id": "s1"})
    True
    """

    def __init__(self, block_id: str = "", queue: ListQueue | None = None, queue_name: str = EVENTS_QUEUE) -> None:
        self.block_id = block_id
        self.queue = queue or MemoryListQueue()
        self.queue_name = queue_name

    def push_event(self, event_name: str, event_data: Any = None) -> bool:
        """Push ``{"event_name", "block_id", "event_data", "ts"}``; False when it failed."""
        payload = json.dumps(
            {
                "event_name": event_name,
                "block_id": self.block_id,
                "event_data": event_data if event_data is not None else {},
                "ts": time.time(),
            },
            default=str,
        )
        try:
            self.queue.push(self.queue_name, payload)
        except Exception as exc:
            log.error("push_event %r to %s failed: %s", event_name, self.queue_name, exc)
            return False
        return True


class BlockSideCars:
    """Push protobuf messages to side-cars' ``INPUTS`` queues.

    ``queues`` maps each side-car name to the ``ListQueue`` that reaches it (built
    from settings; in memory by default).
    """

    def __init__(self, queues: Mapping[str, ListQueue] | None = None) -> None:
        self.queues: dict[str, ListQueue] = dict(queues or {})
        self.failures = 0

    def push_to_sidecar(self, name: str, input_proto: _Serializable) -> bool:
        """Push ``input_proto.SerializeToString()`` to side-car ``name``; False on failure."""
        queue = self.queues.get(name)
        if queue is None:
            self.failures += 1
            log.error("unknown side-car %r (configured: %s)", name, sorted(self.queues) or "none")
            return False
        try:
            queue.push(SIDECAR_INPUTS, input_proto.SerializeToString())
        except Exception as exc:
            self.failures += 1
            log.error("push to side-car %r failed: %s", name, exc)
            return False
        return True

    def push_to_all_sidecars(self, input_proto: _Serializable) -> bool:
        """Push to every configured side-car; True only when every push succeeded."""
        results = [self.push_to_sidecar(name, input_proto) for name in self.queues]
        return all(results)


__all__ = ["BlockEvents", "BlockSideCars"]
