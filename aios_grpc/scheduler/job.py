"""``Job`` and ``Result``: one packet travelling through the scheduler, and its answers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from aios_grpc.packet import AIOSPacket


class Kind(IntEnum):
    """What a ``Result`` says (the numbers are ``aios.block.v1.ResultKind``'s)."""

    OK = 1
    ERROR = 2
    PARTIAL = 3


@dataclass(slots=True)
class Result:
    """An answer about one job: terminal (OK, ERROR) or a partial output."""

    kind: Kind
    output: AIOSPacket | None = None
    error: BaseException | None = None

    @property
    def terminal(self) -> bool:
        """True for OK and ERROR."""
        return self.kind is not Kind.PARTIAL


Reply = Callable[[Result], None]


@dataclass(slots=True, eq=False)
class Job:
    """One input packet and where its answers go.

    ``reply`` is called on the event loop's thread, once per partial output and
    exactly once with a terminal result. ``deadline`` is a ``time.monotonic()``
    instant (0: none). ``members`` is set on a job made by the muxer: the jobs it
    merged, each answered with the merged job's terminal result.
    """

    packet: AIOSPacket
    reply: Reply
    received: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    members: list[Job] | None = None
    source: str = ""
    trace: Any = None


class JobQueue:
    """The scheduler's bounded queue of jobs: ``asyncio.Queue``'s interface, less of its cost.

    ``asyncio.Queue`` spends about a dozen Python calls per item on bookkeeping this
    queue never needs (``task_done``/``join``); a packet passes through once, so those
    calls are paid per packet. Only the methods the scheduler and the batch stage use
    are here: ``put``/``put_nowait`` (``asyncio.QueueFull`` when full), ``get``/
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
