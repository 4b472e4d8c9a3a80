"""Retrying Redis calls after transient errors: one back-off and one retry helper for every Redis loop.

``Retry`` keeps one loop's count of transient failures in a row. One attempt is
``async with retry: ...``: success resets the count; a transient error (``TRANSIENT``)
is counted, logged on the first failure and every 20th, paced by the back-off and
swallowed (``retry.failed`` is then true); any other error goes on to the caller
(``retry.failed`` false).
``await retry.call(fn)`` repeats ``fn()`` until it succeeds (or re-raises the last
transient error once ``attempts`` failed in a row or ``deadline`` passed).

The Redis loops pause ``REDIS_BACKOFF`` without jitter; routing's ``RedisLink`` passes
the router's ``Backoff`` with jitter, quietly (it reports by raising ``LinkUnavailable``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aios_grpc.backoff import Backoff

log = logging.getLogger("aios_grpc.redis")

T = TypeVar("T")

# Errors after which the same call may succeed once Redis is reachable again.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

# The pause after transient Redis errors: 0.1 s, doubling, at most 2 s; no jitter.
REDIS_BACKOFF = Backoff(0.05, 2.0)
# The pause before a reader that died of any error starts again: 0.2 s, doubling, at most 5 s.
READER_BACKOFF = Backoff(0.1, 5.0)


class Retry:
    """One Redis loop's transient failures in a row, and the pause after each.

    ``what`` names the loop in the log (``"XACK on mystream"``). Only transient errors
    are counted and retried; cancellation and every other error reach the caller,
    and leave the count as it is. A failure is logged on the first and every 20th in
    a row (unless ``quiet``), so an outage is visible without flooding the log.
    """

    def __init__(
        self, what: str, *, backoff: Backoff = REDIS_BACKOFF, jitter: bool = False, quiet: bool = False
    ) -> None:
        self.what = what
        self.backoff = backoff
        self.jitter = jitter
        self.quiet = quiet
        self.failures = 0
        # Whether the last ``async with`` attempt ended in a transient error (swallowed).
        self.failed = False

    def succeeded(self) -> None:
        """An attempt worked: the next failure is the first again."""
        self.failures = 0

    async def fail(self, exc: BaseException, *, deadline: float | None = None) -> None:
        """Count ``exc`` as one more failure in a row and sleep the back-off.

        With ``deadline`` (the loop's clock), the sleep ends by then, and ``exc`` is
        raised instead once it has passed.
        """
        self.failures += 1
        failures = self.failures
        delay = self.backoff.delay(failures, jitter=self.jitter)
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise exc
            delay = min(delay, left)
        if not self.quiet and (failures == 1 or failures % 20 == 0):
            log.warning("%s: %s (retrying, %d failures in a row)", self.what, exc, failures)
        await asyncio.sleep(delay)

    async def __aenter__(self) -> Retry:
        self.failed = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None:
            self.failures = 0
            return False
        if isinstance(exc, TRANSIENT):
            self.failed = True
            await self.fail(exc)
            return True
        return False

    async def call(
        self, fn: Callable[[], Awaitable[T]], *, attempts: int | None = None, deadline: float | None = None
    ) -> T:
        """``await fn()`` until it does not raise a transient error; its result.

        The last transient error is raised once ``attempts`` attempts in a row failed
        (after their pauses), or when one fails after ``deadline`` (the loop's clock).
        Any other error is raised at once.
        """
        tried = 0
        while True:
            tried += 1
            try:
                result = await fn()
            except TRANSIENT as exc:
                await self.fail(exc, deadline=deadline)
                if attempts is not None and tried >= attempts:
                    raise
                continue
            self.failures = 0
            return result


__all__ = ["READER_BACKOFF", "REDIS_BACKOFF", "TRANSIENT", "Retry"]
