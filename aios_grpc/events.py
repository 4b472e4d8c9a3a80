"""``BlockEvents`` and ``BlockSideCars``: pushes from a block to outside consumers.

Both push onto named queues through a ``ListQueue`` (in memory by default, a Redis
list in production). Failures are logged and returned as False, never raised into
the block's processing.

A side-car push is tried twice (the original SDK "retries connection once"), each try
bounded by the queue's own timeout (``RedisListQueue.for_sidecar``: 0.5 s), and
``push_to_all_sidecars`` pushes to the side-cars in parallel on threads of its own, so
side-cars that are down hold ``on_data`` about one second in all, however many there
are. ``failures`` counts failed pushes per side-car; each failure is a log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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
        self.failures_by_name: Counter[str] = Counter()
        """Failed pushes per side-car name (after the retry)."""
        self._pool: ThreadPoolExecutor | None = None

    def push_to_sidecar(self, name: str, input_proto: _Serializable) -> bool:
        """Push ``input_proto.SerializeToString()`` to side-car ``name`` (retried once); False on failure."""
        queue = self.queues.get(name)
        if queue is None:
            self._failed(name)
            log.error("unknown side-car %r (configured: %s)", name, sorted(self.queues) or "none")
            return False
        payload = input_proto.SerializeToString()
        for attempt in (1, 2):
            try:
                queue.push(SIDECAR_INPUTS, payload)
                return True
            except Exception as exc:
                if attempt == 1:
                    log.warning("push to side-car %r failed, retrying once: %s", name, exc)
                    continue
                self._failed(name)
                log.error("push to side-car %r failed twice, giving up: %s", name, exc)
        return False

    def _failed(self, name: str) -> None:
        self.failures += 1
        self.failures_by_name[name] += 1

    def push_to_all_sidecars(self, input_proto: _Serializable) -> bool:
        """Push to every configured side-car at once; True only when every push succeeded."""
        names = list(self.queues)
        if len(names) <= 1:
            return all([self.push_to_sidecar(name, input_proto) for name in names])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(min(len(names), 8), thread_name_prefix="aios-sidecar")
        results = list(self._pool.map(lambda name: self.push_to_sidecar(name, input_proto), names))
        return all(results)


__all__ = ["BlockEvents", "BlockSideCars"]
