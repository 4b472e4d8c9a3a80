"""``JobQueue``: the scheduler's bounded queue of jobs, and ``wake_first`` for its waiters."""

from __future__ import annotations

import asyncio
from collections import deque

from aios_grpc.job import Job


class JobQueue:
    """The scheduler's bounded queue of jobs: ``asyncio.Queue``'s interface, less of its cost.

    ``asyncio.Queue`` spends about a dozen Python calls per item on bookkeeping this
    queue never needs (``task_done``/``join``); a packet passes through once, so those
    calls are paid per packet. Only the methods the scheduler and the batch stage use
    are here: ``put``/``put_nowait``/``put_many_nowait`` (``asyncio.QueueFull`` when full), ``get``/
    ``get_nowait`` (``asyncio.QueueEmpty`` when empty), ``qsize``, ``empty``, ``full``.
    Use it from the event loop's thread only.
    """

    __slots__ = ("_getters", "_items", "_putters", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"JobQueue needs maxsize >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[Job] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        """Jobs waiting."""
        return len(self._items)

    def empty(self) -> bool:
        """Whether no job waits."""
        return not self._items

    def full(self) -> bool:
        """Whether ``put_nowait`` would raise ``asyncio.QueueFull``."""
        return len(self._items) >= self.maxsize

    def put_nowait(self, job: Job) -> None:
        """Add a job; ``asyncio.QueueFull`` when the queue holds ``maxsize`` already."""
        items = self._items
        if len(items) >= self.maxsize:
            raise asyncio.QueueFull
        items.append(job)
        if self._getters:
            wake_first(self._getters)

    def put_many_nowait(self, jobs: list[Job]) -> None:
        """Add several jobs at once (the caller checked that they fit), waking one getter per job."""
        items = self._items
        if len(items) + len(jobs) > self.maxsize:
            raise asyncio.QueueFull
        items.extend(jobs)
        getters = self._getters
        if getters:
            for _ in range(min(len(jobs), len(getters))):
                wake_first(getters)

    async def put(self, job: Job) -> None:
        """Add a job, waiting while the queue is full."""
        while len(self._items) >= self.maxsize:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken and cancelled at once: hand the wake-up to the next putter.
                if waiter.done() and not waiter.cancelled() and len(self._items) < self.maxsize:
                    wake_first(self._putters)
                raise
        self.put_nowait(job)

    def get_nowait(self) -> Job:
        """The oldest job; ``asyncio.QueueEmpty`` when there is none."""
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        job = items.popleft()
        if self._putters:
            wake_first(self._putters)
        return job

    async def get(self) -> Job:
        """The oldest job, waiting for one."""
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and self._items:
                    wake_first(self._getters)
                raise
        return self.get_nowait()


def wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    """Wake the oldest waiter still waiting."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return
