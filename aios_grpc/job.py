"""``Job`` and ``Result``: one packet travelling through the runtime, and its answers (``Partial``, ``PartialGate``).

``Answerer`` is the seam a runtime stage answers jobs through (the scheduler is one),
so that a stage needs no import of the scheduler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

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

    # A partial output may hold a place in its packet's ``PartialGate`` (see ``Partial``);
    # on any other result these three do nothing.

    def defer(self) -> None:
        """The consumer will call ``sent()`` or ``drop()`` itself (the gRPC stream, once written)."""

    def sent(self) -> None:
        """The partial left (written or handed on): its place is free again."""

    def drop(self) -> None:
        """The partial goes nowhere (its caller is gone): its packet's producer stops."""


@dataclass(slots=True, eq=False)
class Partial(Result):
    """A streamed output holding one place of its packet's ``PartialGate`` until it is sent.

    The scheduler hands it to ``job.reply`` and frees the place when the reply returns,
    unless the consumer called ``defer()`` meanwhile: then the consumer calls ``sent()``
    once the partial is written, or ``drop()`` when it never will be. Both are idempotent.
    """

    gate: PartialGate | None = None
    deferred: bool = False

    def defer(self) -> None:
        """The consumer will call ``sent()`` or ``drop()`` itself."""
        self.deferred = True

    def sent(self) -> None:
        """Free the place (on the loop's thread)."""
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.release()

    def drop(self) -> None:
        """Close the packet's gate: its producer stops at its next partial (on the loop's thread)."""
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.close()


Reply = Callable[[Result], None]


@dataclass(slots=True, eq=False)
class Job:
    """One input packet and where its answers go.

    ``reply`` is called on the event loop's thread, once per partial output and
    exactly once with a terminal result. ``deadline`` is a ``time.monotonic()``
    instant (0: none). ``members`` is set on a job made by the muxer: the jobs it
    merged, each answered with the merged job's terminal result.

    The field order is pinned (``tests/runtime/test_job_fields.py``): the Process
    stream builds its jobs positionally (``packet, reply, received, deadline, members,
    source, trace``), which is measurably cheaper per packet than keywords, so a field
    added or moved among those would silently shift its arguments. Add new fields at
    the end and update the test.
    """

    packet: AIOSPacket
    reply: Reply
    received: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    members: list[Job] | None = None
    source: str = ""
    # The W3C trace context the packet came with from its transport (the Process
    # stream's metadata), read by telemetry when the packet's own headers carry none.
    trace: Mapping[str, str] | None = None
    # Set on the job's first partial output (see PartialGate); None for a job that never streams.
    gate: PartialGate | None = None
    # Set by Scheduler.answer: a later terminal answer (a chunk cancelled after some of
    # its jobs were answered) is dropped, so each job is answered and counted once.
    answered: bool = False
    # Telemetry's own per-packet state (``Observability``: the packet's open span), set
    # when the packet is received; None while the packet is not traced.
    span: object = None


# What a job's run came to: its output packets, or the error that answers it.
Outcome = list[AIOSPacket] | BaseException


class Answerer(Protocol):
    """Where a runtime stage sends its jobs' terminal answers (the scheduler's bookkeeping)."""

    def answer(self, job: Job, result: Result) -> None:
        """Send ``job``'s terminal result; only the first one counts."""

    def answer_outcomes(self, jobs: Sequence[Job], outcomes: Sequence[Outcome | None]) -> None:
        """Answer each of ``jobs`` from its outcome (None: answered already)."""


class PartialGate:
    """Bounds one packet's partial outputs produced but not yet sent (``AIOS_MAX_UNSENT_PARTIALS``).

    The producer takes a place per partial (``take`` blocks a worker thread, ``take_async``
    waits on the loop); the consumer frees it once the partial is written (``release``).
    ``close`` wakes every waiter for good: ``take`` then answers False and the producer
    stops. ``finish`` marks the packet answered (the scheduler's exactly-once guard for
    packets whose terminal answer may come from two places). ``peak`` is the most places
    ever taken at once (for tests and diagnostics).

    Created only when a packet streams, so a packet that never does pays nothing.
    ``release``, ``close`` and ``finish`` run on the loop's thread; ``take`` in a worker thread.
    """

    __slots__ = ("_cond", "_free", "_waiter", "closed", "finished", "limit", "peak", "waiting")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"PartialGate needs limit >= 1, got {limit}")
        self.limit = limit
        self._free = limit
        self._cond = threading.Condition(threading.Lock())
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.finished = False
        self.peak = 0
        self.waiting = 0  # producers waiting for a place now

    @property
    def unsent(self) -> int:
        """Partials produced and not yet sent."""
        return self.limit - self._free

    def _taken(self) -> None:
        self._free -= 1
        used = self.limit - self._free
        if used > self.peak:
            self.peak = used

    def take(self) -> bool:
        """Take a place, blocking this (worker) thread while none is free; False once closed."""
        with self._cond:
            while self._free <= 0 and not self.closed:
                self.waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self.waiting -= 1
            if self.closed:
                return False
            self._taken()
            return True

    def try_take(self) -> bool:
        """Take a place if one is free and the gate is open, without waiting."""
        with self._cond:
            if self._free <= 0 or self.closed:
                return False
            self._taken()
            return True

    async def take_async(self) -> bool:
        """Take a place, waiting on the loop while none is free; False once closed."""
        while True:
            with self._cond:
                if self.closed:
                    return False
                if self._free > 0:
                    self._taken()
                    return True
                self.waiting += 1
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
                with self._cond:
                    self.waiting -= 1

    def release(self) -> None:
        """Give one place back (the partial was sent)."""
        with self._cond:
            self._free += 1
            self._cond.notify()
        self._wake()

    def close(self) -> None:
        """Wake every producer for good: nothing more is sent for this packet."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._wake()

    def finish(self) -> bool:
        """Mark the packet answered and close the gate; True when it was answered already."""
        if self.finished:
            return True
        self.finished = True
        self.close()
        return False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
