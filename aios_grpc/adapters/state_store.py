"""The ``StateStore`` seam: JSON values by namespace and key, with optional TTL.

Values are stored as JSON text (never pickle), in memory and in Redis alike, so a
value that works with one store works with the other.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from typing import Any


class StateStore(ABC):
    """Key/value state grouped in namespaces (a session, a named dict)."""

    @abstractmethod
    def get_raw(self, namespace: str, key: str) -> str | None:
        """The JSON text stored at ``key``, or None."""

    @abstractmethod
    def set_raw(self, namespace: str, key: str, value: str) -> None:
        """Store JSON text at ``key``."""

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; True when it existed."""

    @abstractmethod
    def items_raw(self, namespace: str) -> dict[str, str]:
        """Every key of the namespace with its JSON text."""

    @abstractmethod
    def clear(self, namespace: str) -> None:
        """Remove the whole namespace."""

    @abstractmethod
    def namespaces(self, prefix: str) -> list[str]:
        """Namespaces whose name starts with ``prefix``."""

    @abstractmethod
    def expire(self, namespace: str, ttl_s: float) -> None:
        """Remove the namespace ``ttl_s`` seconds from now (refreshed by each call)."""


def dumps(value: Any) -> str:
    """JSON text of ``value``; a clear TypeError when it is not JSON-able."""
    try:
        return json.dumps(value)
    except TypeError as exc:
        raise TypeError(f"state values must be JSON-serializable: {exc}") from None


class MemoryStateStore(StateStore):
    """State kept in this process, with the same JSON and TTL behaviour as Redis.

    Expired namespaces are dropped when read, and by a sweep that runs on a write at
    most every ``SWEEP_INTERVAL_S``: sessions with a TTL that are never read again
    (the common case) must not pile up.
    """

    SWEEP_INTERVAL_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, str]] = {}
        self._expiry: dict[str, float] = {}
        self._next_sweep = 0.0

    def size(self) -> int:
        """Namespaces held right now (expired ones not swept yet included)."""
        with self._lock:
            return len(self._data)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.SWEEP_INTERVAL_S
        for namespace in [n for n, until in self._expiry.items() if now >= until]:
            self._data.pop(namespace, None)
            self._expiry.pop(namespace, None)

    def _live(self, namespace: str) -> dict[str, str] | None:
        until = self._expiry.get(namespace)
        if until is not None and time.monotonic() >= until:
            self._data.pop(namespace, None)
            self._expiry.pop(namespace, None)
        return self._data.get(namespace)

    def get_raw(self, namespace: str, key: str) -> str | None:
        with self._lock:
            ns = self._live(namespace)
            return None if ns is None else ns.get(key)

    def set_raw(self, namespace: str, key: str, value: str) -> None:
        with self._lock:
            self._sweep()
            ns = self._live(namespace)
            if ns is None:
                ns = self._data[namespace] = {}
            ns[key] = value

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            ns = self._live(namespace)
            found = ns is not None and ns.pop(key, None) is not None
            if ns is not None and not ns:
                # Like Redis, a namespace with no key left is gone (its TTL with it).
                self._data.pop(namespace, None)
                self._expiry.pop(namespace, None)
            return found

    def items_raw(self, namespace: str) -> dict[str, str]:
        with self._lock:
            return dict(self._live(namespace) or {})

    def clear(self, namespace: str) -> None:
        with self._lock:
            self._data.pop(namespace, None)
            self._expiry.pop(namespace, None)

    def namespaces(self, prefix: str) -> list[str]:
        with self._lock:
            return [n for n in list(self._data) if n.startswith(prefix) and self._live(n)]

    def expire(self, namespace: str, ttl_s: float) -> None:
        with self._lock:
            self._expiry[namespace] = time.monotonic() + ttl_s
