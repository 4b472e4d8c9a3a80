"""The ``ListQueue`` seam: push payloads onto named queues.

>>> q = MemoryListQueue()
>>> q.push("EVENTS_QUEUE", '{"event_name": "x"}')
>>> q.items("EVENTS_QUEUE")
['{"event_name": "x"}']
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import defaultdict


class ListQueue(ABC):
    """Somewhere to push payloads by queue name (a Redis list in production)."""

    @abstractmethod
    def push(self, queue_name: str, payload: str | bytes) -> None:
        """Append ``payload`` to ``queue_name``; raise on failure."""


class MemoryListQueue(ListQueue):
    """In-process queues, for running without Redis and for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[str | bytes]] = defaultdict(list)

    def push(self, queue_name: str, payload: str | bytes) -> None:
        with self._lock:
            self._queues[queue_name].append(payload)

    def items(self, queue_name: str) -> list[str | bytes]:
        """What was pushed to ``queue_name``, oldest first."""
        with self._lock:
            return list(self._queues.get(queue_name, []))
