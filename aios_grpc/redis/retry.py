"""Retrying Redis calls after transient errors: one back-off for every Redis loop."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("aios_grpc.redis")

# Errors after which the same call may succeed once Redis is reachable again.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


async def pause(failures: int, what: str, exc: BaseException) -> None:
    """Sleep a capped exponential delay after ``failures`` transient errors in a row.

    Logged on the first failure and every 20th, so an outage is visible without
    flooding the log.
    """
    if failures == 1 or failures % 20 == 0:
        log.warning("%s: %s (retrying, %d failures in a row)", what, exc, failures)
    await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 10)))


__all__ = ["TRANSIENT", "pause"]
