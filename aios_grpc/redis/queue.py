"""``RedisListQueue``: ``ListQueue`` as ``LPUSH`` onto Redis lists.

``BlockEvents`` pushes to ``EVENTS_QUEUE`` and ``BlockSideCars`` to each side-car's
``INPUTS`` list through it, as the original SDK did (consumers pop with ``BRPOP``
or ``BLMOVE`` from the other end, so the order is first in, first out).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aios_grpc.adapters.list_queue import ListQueue
from aios_grpc.redis.state import sync_client

SIDECAR_TIMEOUT_S = 0.5
"""Connect and reply timeout of one push to a side-car (``BlockSideCars`` tries twice)."""


class RedisListQueue(ListQueue):
    """Pushes to lists on one Redis server."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisListQueue:
        """A queue on the Redis server at ``url``."""
        return cls(sync_client(url))

    @classmethod
    def for_sidecar(cls, url: str, timeout_s: float = SIDECAR_TIMEOUT_S) -> RedisListQueue:
        """A queue for side-car pushes: each attempt bounded by ``timeout_s``, no retries of its
        own (``BlockSideCars`` retries once), so a side-car that is down holds the block
        about ``2 * timeout_s``, not the seconds of the state store's reconnect policy."""
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
        )
        return cls(client)

    def push(self, queue_name: str, payload: str | bytes) -> None:
        """``LPUSH`` ``payload`` onto ``queue_name`` (raises when Redis is unreachable)."""
        self.client.lpush(queue_name, payload)


def sidecar_url(name: str, config: Any, block_id: str) -> str:
    """The Redis URL of side-car ``name``: its ``redis_url``, else the cluster naming convention.

    The convention is the original SDK's: ``<name>-<block_id>-svc.sidecars.svc.cluster.local``
    on port 6379; ``{"external": true}`` needs an ``external_redis_url``.
    """
    config = config if isinstance(config, dict) else {}
    if config.get("redis_url"):
        return str(config["redis_url"])
    if config.get("external"):
        url = config.get("external_redis_url")
        if not url:
            raise ValueError(f"side-car {name!r} is external but has no external_redis_url")
        return str(url)
    return f"redis://{name}-{block_id}-svc.sidecars.svc.cluster.local:6379/0"


__all__ = ["RedisListQueue", "sidecar_url"]
