"""The scheduler's streamed outputs: a packet's ``PartialGate``, delivering partials, finishing.

Each job gets exactly one terminal result through ``job.reply``; partial outputs
(generators) come before it. A packet may have at most ``AIOS_MAX_UNSENT_PARTIALS``
partials produced and not yet sent (``PartialGate``, made on the packet's first
partial): past it a sync generator's worker thread blocks and an async generator
awaits, until the consumer frees places (the gRPC stream once it wrote them, other
consumers as soon as they took them), or until the caller is gone, when the
generator is closed. A routed packet streams each partial downstream as it comes.

``Partials`` is a part of ``Scheduler`` (which inherits it): it owns the state set in
``_init_partials`` and reads the scheduler's settings, router and loop. The names it
uses from the scheduler's other parts are declared under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aios_grpc._text import quote
from aios_grpc.errors import PartialsAbandoned
from aios_grpc.job import Job, Kind, Outcome, Partial, PartialGate, Result
from aios_grpc.packet import AIOSPacket, OnDataResult
from aios_grpc.routing import Router
from aios_grpc.settings import Settings

log = logging.getLogger("aios_grpc.runtime")


class Partials:
    """The streamed-output half of ``Scheduler``: gate, deliver, finish."""

    settings: Settings
    router: Router | None
    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: int

    if TYPE_CHECKING:
        # From the scheduler's other parts (scheduler.py, workers.py).

        def answer(self, job: Job, result: Result) -> None: ...

        def output_packet(self, job: Job, result: OnDataResult) -> AIOSPacket: ...

        def _finish(self, job: Job, res: Outcome | None) -> None: ...

        def _routes(self, job: Job) -> bool: ...

    def _init_partials(self) -> None:
        # Streamed (partial) outputs of routed jobs on their way downstream; the job's
        # terminal result waits for them.
        self._partial_routes: dict[Job, list[asyncio.Task[list[AIOSPacket]]]] = {}
        # Guards the creation of a job's PartialGate (a worker thread) against the loop
        # answering the job meanwhile (see _gate and _answer_chunk).
        self._gate_lock = threading.Lock()

    def _gate(self, job: Job) -> PartialGate:
        """``job``'s gate, made on its first partial (from a worker thread or the loop)."""
        with self._gate_lock:
            gate = job.gate
            if gate is None:
                gate = job.gate = PartialGate(self.settings.max_unsent_partials)
            return gate

    def _emit_output(self, job: Job, result: OnDataResult) -> Coroutine[Any, Any, None] | None:
        """A streamed ``on_data`` item of ``job``, called by its producer.

        In a worker thread it blocks while the packet has ``max_unsent_partials`` partials
        unsent; on the loop it returns a coroutine to await in that case (None otherwise).
        Raises ``PartialsAbandoned`` once the packet's partials go nowhere.
        """
        output = self.output_packet(job, result)
        gate = job.gate or self._gate(job)
        if threading.get_ident() != self._loop_thread:
            if not gate.take():
                raise PartialsAbandoned("the caller no longer takes this packet's partial outputs", stage="data")
            self._to_loop(self._deliver, job, output, gate)
            return None
        if gate.try_take():
            self._deliver(job, output, gate)
            return None
        return self._deliver_later(job, output, gate)

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, from a worker thread; nothing once the loop is closed
        (a thread still running after shutdown has no one left to answer)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            if not self._loop.is_closed():
                raise
            raise PartialsAbandoned("the server has stopped", stage="data") from None

    async def _deliver_later(self, job: Job, output: AIOSPacket, gate: PartialGate) -> None:
        if not await gate.take_async():
            raise PartialsAbandoned("the caller no longer takes this packet's partial outputs", stage="data")
        self._deliver(job, output, gate)

    def _deliver(self, job: Job, output: AIOSPacket, gate: PartialGate) -> None:
        """Hand one partial holding a place of ``gate`` to its consumer (on the loop's thread)."""
        result = Partial(Kind.PARTIAL, output=output, gate=gate)
        if gate.finished:
            result.drop()  # the job is answered: nothing may follow its terminal result
            return
        if self._routes(job):
            # A routed packet streams each output downstream as it comes; the place is
            # free once the target took it.
            tasks = self._partial_routes.setdefault(job, [])
            task = asyncio.create_task(self._route_partial(job, output, tasks[-1] if tasks else None))
            task.add_done_callback(lambda _: result.sent())
            tasks.append(task)
            return
        try:
            job.reply(result)
        except Exception:
            log.exception("partial reply for %s/%s failed", quote(job.packet.session_id), job.packet.seq_no)
            result.sent()
            return
        if not result.deferred:
            result.sent()

    async def _route_partial(
        self, job: Job, output: AIOSPacket, previous: asyncio.Task[list[AIOSPacket]] | None
    ) -> list[AIOSPacket]:
        if previous is not None:
            # One after the other, so that a target receives the stream in order.
            await asyncio.wait([previous])
        assert self.router is not None
        return await self.router.route(job, [output])

    def _send_partial(self, job: Job, output: AIOSPacket) -> None:
        try:
            job.reply(Result(Kind.PARTIAL, output=output))
        except Exception:
            log.exception("partial reply for %s/%s failed", quote(job.packet.session_id), job.packet.seq_no)

    def _answer_chunk(self, jobs: list[Job], error: Exception) -> None:
        """Answer every job of a chunk whose thread may still be running it (cancelled, or an SDK bug).

        Each job gets a finished gate first: whatever its thread does later (a partial,
        its own result) is dropped instead of answering it twice, and a producer waiting
        for a place wakes up and stops.
        """
        for job in jobs:
            gate = job.gate or self._gate(job)
            if not gate.finish():  # else its thread answered it already (_finish_streamed)
                self.answer(job, Result(Kind.ERROR, error=error))

    def _finish_streamed(self, job: Job, res: Outcome) -> None:
        """``_finish`` for a job that streamed, as it ended (handed over by its worker thread, or async)."""
        gate = job.gate
        if gate is not None and gate.finish():
            return  # _answer_chunk answered it already (the worker was cancelled meanwhile)
        self._finish(job, res)
