"""``RedisStateStore``: ``StateStore`` on Redis hashes (JSON text values, never pickle).

Each namespace (a session, a named ``StateDict``) is one hash
``<prefix>:state:<namespace>``; a TTL is the hash's ``PEXPIRE``, so a session's
state disappears for every instance at once.

>>> # store = RedisStateStore.from_url("redis://127.0.0.1:6379/0", prefix="aios")
>>> # SessionsManager(store, default_ttl_s=600).set("s1", "history", [1, 2])
"""

from __future__ import annotations

import re
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from aios_grpc.adapters.state_store import StateStore

_GLOB = re.compile(r"([*?\[\]\\])")


def sync_client(url: str) -> redis.Redis:
    """A blocking redis-py client that retries a few times across a reconnect."""
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


class RedisStateStore(StateStore):
    """State shared by every instance through one Redis server."""

    def __init__(self, client: redis.Redis, prefix: str = "aios") -> None:
        self.client = client
        self.prefix = f"{prefix}:state:"

    @classmethod
    def from_url(cls, url: str, prefix: str = "aios") -> RedisStateStore:
        """A store on the Redis server at ``url``."""
        return cls(sync_client(url), prefix)

    def _key(self, namespace: str) -> str:
        return self.prefix + namespace

    def get_raw(self, namespace: str, key: str) -> str | None:
        """``HGET``: the JSON text at ``key``, or None."""
        raw = cast(bytes | None, self.client.hget(self._key(namespace), key))
        return None if raw is None else raw.decode()

    def set_raw(self, namespace: str, key: str, value: str) -> None:
        """``HSET``: store JSON text at ``key``."""
        self.client.hset(self._key(namespace), key, value)

    def delete(self, namespace: str, key: str) -> bool:
        """``HDEL``: True when ``key`` existed."""
        return bool(self.client.hdel(self._key(namespace), key))

    def items_raw(self, namespace: str) -> dict[str, str]:
        """``HGETALL``: every key of the namespace with its JSON text."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self._key(namespace)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def clear(self, namespace: str) -> None:
        """``DEL`` the namespace's hash."""
        self.client.delete(self._key(namespace))

    def namespaces(self, prefix: str) -> list[str]:
        """Namespaces starting with ``prefix`` (``SCAN``, never ``KEYS``)."""
        pattern = _GLOB.sub(r"\\\1", self._key(prefix)) + "*"
        cut = len(self.prefix)
        names: list[Any] = list(self.client.scan_iter(match=pattern, count=500))
        return sorted({n.decode()[cut:] for n in names})

    def expire(self, namespace: str, ttl_s: float) -> None:
        """``PEXPIRE`` the namespace's hash ``ttl_s`` seconds from now."""
        self.client.pexpire(self._key(namespace), max(1, int(ttl_s * 1000)))


__all__ = ["RedisStateStore", "sync_client"]
