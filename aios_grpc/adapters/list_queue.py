"""The ``ListQueue`` seam: push payloads onto named queues.

>>> q = MemoryListQueue()
>>> q.push("EVENTS_QUEUE", '{"event_name": "x"}')
>>> q.items("EVENTS_QUEUE")
['{"event_name": "x"}']
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque


class ListQueue(ABC):
    """Somewhere to push payloads by queue name (a Redis list in production)."""

    @abstractmethod
    def push(self, queue_name: str, payload: str | bytes) -> None:
        """Append ``payload`` to ``queue_name``; raise on failure."""


class MemoryListQueue(ListQueue):
    """In-process queues, for running without Redis and for tests.

    Nothing consumes them in a server without Redis, so each keeps only its newest
    ``maxlen`` payloads: a block that pushes an event per packet must not grow the
    process without bound.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self.maxlen = maxlen
        self._lock = threading.Lock()
        self._queues: dict[str, deque[str | bytes]] = {}

    def push(self, queue_name: str, payload: str | bytes) -> None:
        with self._lock:
            queue = self._queues.get(queue_name)
            if queue is None:
                queue = self._queues[queue_name] = deque(maxlen=self.maxlen)
            queue.append(payload)

    def items(self, queue_name: str) -> list[str | bytes]:
        """What was pushed to ``queue_name``, oldest first."""
        with self._lock:
            return list(self._queues.get(queue_name, ()))
