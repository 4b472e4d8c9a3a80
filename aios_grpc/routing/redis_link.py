"""``RedisLink``: outputs pushed to a Redis list (``LPUSH``) or stream (``XADD``).

The payload is the output packet as protobuf bytes (``aios.block.v1.Packet``,
wire-compatible with the original ``AIOSPacket``): in a list, the item itself, as
the original executor pushes it; in a stream, the entry's ``packet`` field. A push
that fails is retried with the router's backoff until ``retry_timeout_s`` passed,
then it raises ``LinkUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from aios_grpc.errors import LinkUnavailable
from aios_grpc.redis.retry import TRANSIENT, Retry
from aios_grpc.routing.pointer import REDIS_STREAM
from aios_grpc.routing.policy import Backoff

log = logging.getLogger("aios_grpc.routing")

STREAM_FIELD = "packet"


class RedisLink:
    """A connection pool to one Redis server that takes pushes of output packets."""

    def __init__(self, host: str, port: int, backoff: Backoff, retry_timeout_s: float, **security: Any) -> None:
        """``security``: ``password``, ``username``, ``ssl`` and its files, from the target's AIOS_ROUTE_TLS entry."""
        self.address = f"{host}:{port}"
        self.backoff = backoff
        self.retry_timeout_s = retry_timeout_s
        self.client = aioredis.Redis(host=host, port=port, socket_connect_timeout=2.0, socket_timeout=5.0, **security)

    async def push(self, transport: str, queue_name: str, payload: bytes) -> None:
        """``LPUSH`` or ``XADD`` ``payload`` to ``queue_name``; retried while Redis is down."""
        deadline = asyncio.get_running_loop().time() + self.retry_timeout_s
        retry = Retry(f"pushing to Redis {self.address}", backoff=self.backoff, jitter=True, quiet=True)

        async def push_once() -> None:
            if transport == REDIS_STREAM:
                await self.client.xadd(queue_name, {STREAM_FIELD: payload})
            else:
                await self.client.lpush(queue_name, payload)

        try:
            await retry.call(push_once, deadline=deadline)
        except TRANSIENT as exc:
            raise LinkUnavailable(
                f"Redis {self.address} unreachable for {self.retry_timeout_s:g}s ({retry.failures} attempts): {exc}"
            ) from None

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


__all__ = ["STREAM_FIELD", "RedisLink"]
