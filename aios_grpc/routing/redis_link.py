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

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aios_grpc.errors import LinkUnavailable
from aios_grpc.routing.pointer import REDIS_STREAM
from aios_grpc.routing.policy import Backoff

log = logging.getLogger("aios_grpc.routing")

STREAM_FIELD = "packet"


class RedisLink:
    """A connection pool to one Redis server that takes pushes of output packets."""

    def __init__(self, host: str, port: int, backoff: Backoff, retry_timeout_s: float) -> None:
        self.address = f"{host}:{port}"
        self.backoff = backoff
        self.retry_timeout_s = retry_timeout_s
        self.client = aioredis.Redis(host=host, port=port, socket_connect_timeout=2.0, socket_timeout=5.0)

    async def push(self, transport: str, queue_name: str, payload: bytes) -> None:
        """``LPUSH`` or ``XADD`` ``payload`` to ``queue_name``; retried while Redis is down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_timeout_s
        failures = 0
        while True:
            try:
                if transport == REDIS_STREAM:
                    await self.client.xadd(queue_name, {STREAM_FIELD: payload})
                else:
                    await self.client.lpush(queue_name, payload)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failures += 1
                left = deadline - loop.time()
                if left <= 0:
                    raise LinkUnavailable(
                        f"Redis {self.address} unreachable for {self.retry_timeout_s:g}s ({failures} attempts): {exc}"
                    ) from None
                await asyncio.sleep(min(self.backoff.delay(failures), left))

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


__all__ = ["STREAM_FIELD", "RedisLink"]
