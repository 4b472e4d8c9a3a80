"""``Window``: the one flow-control window of the transports (packets read, not yet answered).

A counting semaphore with a non-blocking, all-or-none fast path (``try_acquire``, taken
once per packet on the event loop's thread), an ``acquire`` that waits for one place,
and a ``release`` that hands the freed places straight to the waiters, oldest first, so
it wakes exactly as many as fit. Used by the gRPC ``Process`` stream and by the Redis
list ingress. Transport-free: it imports neither grpc nor redis.

Invariant: while any acquirer waits, no place is free (a release hands each freed place
to a waiter before anyone else can take it), so ``try_acquire`` never overtakes a
waiter without having to look at the waiters.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Window:
    """At most ``size`` places taken at once; loop-thread only (not thread-safe)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        # Each waiter's future gets its result once a place was handed to it.
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Places free now (for tests and diagnostics)."""
        return self._free

    @property
    def waiting(self) -> int:
        """Acquirers waiting for a place now (for tests and diagnostics)."""
        return len(self._waiters)

    def try_acquire(self, places: int = 1) -> bool:
        """Take ``places`` places if that many are free (all or none); never waits."""
        if self._free >= places:
            self._free -= places
            return True
        return False

    async def acquire(self) -> None:
        """Take one place, waiting for it in turn (FIFO) if none is free.

        A waiter cancelled after its place was handed to it gives the place back, so a
        cancellation never leaks a place.
        """
        if self._free > 0:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a place, then cancelled before running: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self, places: int = 1) -> None:
        """Give ``places`` places back, handing each to the oldest waiter while any wait."""
        self._free += places
        if self._waiters:
            self._hand_over()

    def _hand_over(self) -> None:
        waiters = self._waiters
        while waiters and self._free > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)
