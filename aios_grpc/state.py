"""``StateDict`` and ``SessionsManager``: block state that can live in memory or Redis.

>>> sessions = SessionsManager()
>>> sessions.set("s1", "count", 1)
>>> sessions.get("s1", "count")
1
>>> state = StateDict("counters")
>>> state["seen"] = {"a": [1, 2]}
>>> state["seen"]["a"]
[1, 2]

Where they live: a ``StateDict`` or ``SessionsManager`` made without a ``store`` uses the
process's default store, which a server with ``AIOS_REDIS_URL`` set makes its Redis
(from its start until it stops): ``StateDict("counters")`` in a block's ``__init__`` or
later is then shared by every instance of the block. Without Redis each one keeps its
values in memory of its own. One made before the server exists (at import time) stays in
memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

from aios_grpc.adapters.state_store import MemoryStateStore, StateStore, dumps

# The stores that running servers made the default, latest last (servers in one process,
# as in tests, may stop in any order).
_defaults: list[StateStore] = []


def add_default_store(store: StateStore) -> None:
    """Make ``store`` the one that ``StateDict``/``SessionsManager`` made without a store use,
    until ``remove_default_store(store)``."""
    _defaults.append(store)


def remove_default_store(store: StateStore) -> None:
    """Undo ``add_default_store(store)`` (the one added before it is the default again)."""
    if store in _defaults:
        _defaults.remove(store)


def default_store() -> StateStore | None:
    """The store added last and not removed (None: each gets a memory store of its own)."""
    return _defaults[-1] if _defaults else None


class StateDict(MutableMapping[str, Any]):
    """A dict of JSON values stored in a ``StateStore`` under one name.

    Reads return copies: change a value and assign it back to store the change.
    """

    def __init__(self, name: str = "default", store: StateStore | None = None, ttl_s: float | None = None) -> None:
        self.name = name
        self._store = store or default_store() or MemoryStateStore()
        self._ttl_s = ttl_s

    def __getitem__(self, key: str) -> Any:
        raw = self._store.get_raw(self.name, key)
        if raw is None:
            raise KeyError(key)
        return json.loads(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        self._store.set_raw(self.name, key, dumps(value))
        if self._ttl_s:
            self._store.expire(self.name, self._ttl_s)

    def __delitem__(self, key: str) -> None:
        if not self._store.delete(self.name, key):
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.items_raw(self.name))

    def __len__(self) -> int:
        return len(self._store.items_raw(self.name))

    def to_dict(self) -> dict[str, Any]:
        """Every key and value, as a plain dict."""
        return {k: json.loads(v) for k, v in self._store.items_raw(self.name).items()}

    def clear(self) -> None:
        """Remove every key."""
        self._store.clear(self.name)


class SessionsManager:
    """Per-session state, one ``StateDict`` per session id.

    ``default_ttl_s`` makes each session expire that long after its last write.
    """

    PREFIX = "session:"

    def __init__(self, store: StateStore | None = None, default_ttl_s: float | None = None) -> None:
        self._store = store or default_store() or MemoryStateStore()
        self._ttl_s = default_ttl_s

    @property
    def store(self) -> StateStore:
        """Where the sessions live."""
        return self._store

    def session(self, session_id: str, ttl_s: float | None = None) -> StateDict:
        """The ``StateDict`` of one session (created on first write)."""
        return StateDict(self.PREFIX + session_id, self._store, ttl_s or self._ttl_s)

    def get(self, session_id: str, key: str, default: Any = None) -> Any:
        """One value of a session, or ``default``."""
        return self.session(session_id).get(key, default)

    def set(self, session_id: str, key: str, value: Any, ttl_s: float | None = None) -> None:
        """Store one JSON value in a session."""
        self.session(session_id, ttl_s)[key] = value

    def get_session(self, session_id: str) -> dict[str, Any]:
        """Every value of a session, as a plain dict (empty when unknown)."""
        return self.session(session_id).to_dict()

    def exists(self, session_id: str) -> bool:
        """Whether the session holds any value."""
        return len(self.session(session_id)) > 0

    def delete_session(self, session_id: str) -> None:
        """Forget one session."""
        self._store.clear(self.PREFIX + session_id)

    def list_sessions(self) -> list[str]:
        """Ids of the sessions that hold values."""
        return [n[len(self.PREFIX) :] for n in self._store.namespaces(self.PREFIX)]

    def clear(self) -> None:
        """Forget every session."""
        for name in self._store.namespaces(self.PREFIX):
            self._store.clear(name)


__all__ = ["SessionsManager", "StateDict", "add_default_store", "default_store", "remove_default_store"]
