"""The scheduler's workers: chunk sizing, gathering, one thread hop per chunk.

Worker tasks take jobs off the queue in chunks and run a whole chunk through the
block's plain methods in one thread hand-off (``_run_chunk_sync``): a thread hop costs
tens of microseconds, as much as gRPC's own per-message work, so one hop per packet
would halve throughput. The chunk size adapts to how long the block takes per packet,
so a slow block gets chunks of one and keeps every worker thread busy. A fast block
(the hop costs more than its packet) gets one chunk in the pool at a time while the
next one gathers (``_gather``); the other threads stay free for a packet that turns
out slow. ``async def`` methods run on the loop instead (``_run_one_async``).

``Workers`` is a part of ``Scheduler`` (which inherits it): it owns the state set in
``_init_workers`` and reads the scheduler's block, settings, queue and loop. The
names it uses from the scheduler's other parts are declared under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from json.encoder import encode_basestring_ascii as _json_string
from typing import TYPE_CHECKING, Any

from aios_grpc.errors import BlockCodeError, DeadlineExceeded, InvalidInput, InvalidPacket, Unavailable
from aios_grpc.job import Job, Outcome
from aios_grpc.json_depth import text_too_deep, too_deep_message
from aios_grpc.packet import AIOSPacket, OnDataResult
from aios_grpc.routing import Router
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.queue import JobQueue, wake_first
from aios_grpc.runtime.typed import BlockTypes
from aios_grpc.settings import Settings
from aios_grpc.telemetry import Telemetry

log = logging.getLogger("aios_grpc.runtime")

# A chunk should keep a worker thread busy for about this long: long enough to
# amortise the hand-off, short enough that a slow packet does not hold many others.
_CHUNK_TARGET_S = 0.002
# Below this block time per packet the thread hop costs more than the block, so the
# workers hand the pool one chunk at a time: while it runs, the packets that arrive
# queue up and go together in the next chunk, instead of each worker taking one or
# two and paying a hop of its own.
_FAST_JOB_S = 0.0001
# While a chunk gathers, it goes as soon as no packet came for this share of
# settings.gather_s: packets that keep coming are worth waiting for, a pause is not.
_GATHER_GAP = 0.2
# A chunk in flight for longer than this is taken for stuck (a slow packet in a fast
# block): the other workers stop waiting for it and use the other threads.
_GATE_S = 0.001


class Workers:
    """The worker tasks' half of ``Scheduler``: take chunks, run them, time the block."""

    block: BlockAdapter
    settings: Settings
    telemetry: Telemetry
    executor: ThreadPoolExecutor
    pipelined_arrivals: int
    router: Router | None
    _queue: JobQueue | None
    _loop: asyncio.AbstractEventLoop | None

    if TYPE_CHECKING:
        # From the scheduler's other parts (scheduler.py, partials.py).

        def answer_outcomes(self, jobs: Sequence[Job], outcomes: Sequence[Outcome | None]) -> None: ...

        def _finish(self, job: Job, res: Outcome | None) -> None: ...

        def _finish_streamed(self, job: Job, res: Outcome) -> None: ...

        def _answer_chunk(self, jobs: list[Job], error: Exception) -> None: ...

        def _emit_output(self, job: Job, result: OnDataResult) -> Coroutine[Any, Any, None] | None: ...

        def _to_loop(self, fn: Callable[..., None], *args: Any) -> None: ...

    def _init_workers(self) -> None:
        self._job_time_s = 0.0  # moving average of block time per packet
        self._chunks_started: list[float] = []  # start times of the chunks now in the thread pool
        self._gathering = False  # a worker is gathering a fast block's next chunk
        self._turn_waiters: deque[asyncio.Future[None]] = deque()
        self._pool_waiters: deque[asyncio.Future[None]] = deque()
        self._pipelined_seen = 0
        # The block's declared packet input (``Input = MyInput``, runtime/typed.py), or None.
        self.input_type = BlockTypes.of(type(self.block.instance)).input

    async def _worker(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            # A fast block: one worker at a time gathers the next chunk (see _gather).
            turn = self._job_time_s < _FAST_JOB_S and self.block.all_sync
            if turn:
                await self._take_turn()
            jobs: list[Job] = []
            try:
                try:
                    jobs.append(await queue.get())
                    limit = self._chunk_limit()
                    self._fill(queue, jobs, limit)
                    if turn:
                        await self._gather(queue, jobs, limit)
                    elif len(jobs) < limit:
                        # Let the loop run once more, so that packets already read off the
                        # sockets join this chunk instead of each paying a hop of its own.
                        await asyncio.sleep(0)
                        self._fill(queue, jobs, limit)
                finally:
                    if turn:
                        self._end_turn()
                await self._run(jobs)
            except asyncio.CancelledError:
                self._answer_chunk(jobs, Unavailable("server is shutting down", stage="data"))
                raise
            except Exception as exc:  # a bug in the SDK; never leave a packet unanswered
                log.exception("scheduler failed on a chunk of %d packets", len(jobs))
                self._answer_chunk(jobs, BlockCodeError(f"internal error: {exc}", stage="data"))

    async def _take_turn(self) -> None:
        """Become the one worker that gathers the next chunk of a fast block."""
        while self._gathering:
            waiter = asyncio.get_running_loop().create_future()
            self._turn_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._end_turn()  # woken and cancelled at once: hand the wake-up on
                raise
        self._gathering = True

    def _end_turn(self) -> None:
        self._gathering = False
        wake_first(self._turn_waiters)

    async def _gather(self, queue: JobQueue, jobs: list[Job], limit: int) -> None:
        """Fill a fast block's chunk while the previous chunk is in the pool, and longer
        for a client that does not wait for answers.

        A thread hop costs more than a fast block's packet (tens of microseconds, most
        of it in the operating system), so the chunk should be long: one chunk in the
        pool at a time, the next gathering meanwhile. A chunk in the pool for longer
        than ``_GATE_S`` is taken for stuck (a slow packet in a fast block) and no
        longer waited for. When packets came in behind unanswered packets of their
        stream since the last chunk (a pipelining client, so more are on their way),
        the chunk also waits until its first packet is ``settings.gather_s`` old, or the
        chunk is full, or no packet came for a fifth of that time (a client whose
        pipeline is shallow is waiting for answers, not sending more).
        """
        loop = self._loop
        assert loop is not None
        while self._chunks_started and len(jobs) < limit:
            remaining = max(self._chunks_started) + _GATE_S - time.monotonic()
            if remaining <= 0:
                break
            waiter = loop.create_future()
            self._pool_waiters.append(waiter)
            timer = loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
            self._fill(queue, jobs, limit)
        if len(jobs) >= limit:
            return
        if self.pipelined_arrivals != self._pipelined_seen and self.settings.gather_s > 0:
            self._pipelined_seen = self.pipelined_arrivals
            end = jobs[0].received + self.settings.gather_s
            gap = self.settings.gather_s * _GATHER_GAP
            while len(jobs) < limit:
                delay = end - time.monotonic()
                if delay <= 0:
                    break
                had = len(jobs)
                await asyncio.sleep(min(delay, gap))
                self._fill(queue, jobs, limit)
                if len(jobs) == had:
                    # Nothing came for a while: the client is likely waiting for answers
                    # (a shallow pipeline), so waiting longer only adds latency.
                    break
            return
        await asyncio.sleep(0)
        self._fill(queue, jobs, limit)

    @staticmethod
    def _fill(queue: JobQueue, jobs: list[Job], limit: int) -> None:
        """Add queued jobs to ``jobs`` until it holds ``limit`` or the queue is empty."""
        while len(jobs) < limit:
            try:
                jobs.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    def _chunk_limit(self) -> int:
        if self._job_time_s <= 0:
            return 1
        return max(1, min(self.settings.max_chunk, int(_CHUNK_TARGET_S / self._job_time_s)))

    async def _run(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        self.telemetry.stages_done(jobs, "queue", [now - job.received for job in jobs])
        if self.block.all_sync:
            assert self._loop is not None
            started = time.monotonic()
            self._chunks_started.append(started)
            try:
                results = await self._loop.run_in_executor(self.executor, self._run_chunk_sync, jobs)
            finally:
                self._chunks_started.remove(started)
                wake_first(self._pool_waiters)
            self.answer_outcomes(jobs, results)
        else:
            await asyncio.gather(*(self._run_one_async(job) for job in jobs))

    def _run_chunk_sync(self, jobs: list[Job]) -> list[Outcome | None]:
        out: list[Outcome | None] = []
        start = time.perf_counter()
        run_sync = self.block.run_sync
        output_packet = self.output_packet
        check = self._check
        emit = self._emit_output
        for job in jobs:
            try:
                check(job)
                outputs = run_sync(job.packet, functools.partial(emit, job))
                if len(outputs) == 1:
                    out.append([output_packet(job, outputs[0])])
                else:
                    out.append([output_packet(job, o) for o in outputs])
            except Exception as exc:
                out.append(exc)
            if job.gate is not None:
                # A job that streamed is answered now, not with the chunk: a later packet
                # of its session in this chunk holds its partials until this one is
                # answered, and would wait for places forever.
                self._to_loop(self._finish_streamed, job, out[-1])
                out[-1] = None
        elapsed = (time.perf_counter() - start) / len(jobs)
        self._job_time_s = elapsed if self._job_time_s == 0 else 0.8 * self._job_time_s + 0.2 * elapsed
        return out

    async def _run_one_async(self, job: Job) -> None:
        try:
            self._check(job)
            outputs = await self.block.run_async(job.packet, functools.partial(self._emit_output, job), self.to_thread)
            res: Outcome = [self.output_packet(job, o) for o in outputs]
        except Exception as exc:
            res = exc
        if job.gate is not None:
            self._finish_streamed(job, res)  # marks it answered, for _answer_chunk
        else:
            self._finish(job, res)

    async def to_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a plain function in the block's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _check(self, job: Job) -> None:
        if job.deadline and time.monotonic() > job.deadline:
            raise DeadlineExceeded("packet deadline passed before the block ran it", stage="deadline")
        packet = job.packet
        if packet.output_ptr and self.router is not None:
            # The pointer is parsed and its targets checked before the block runs, not after.
            self.router.check(job)
        data = packet.data
        settings = self.settings
        if (
            type(data) is not str
            or len(packet.files) > settings.max_files_per_packet
            # At most 4 UTF-8 bytes a character: a shorter id is within the limit unmeasured.
            or 4 * len(packet.session_id) > settings.max_session_id_bytes
        ):
            self.block.validate_packet(packet, settings.validate_json, settings.max_files_per_packet, settings)
        elif data and settings.validate_json:
            # The usual packet (JSON text, files within the limit), without validate_packet's frame.
            try:
                packet.check_json()
            except (ValueError, RecursionError):
                # Raises InvalidPacket naming what is wrong.
                self.block.validate_packet(packet, True, settings.max_files_per_packet, settings)
            # Only text long enough to be too deep is looked at (json_depth.py).
            if len(data) > 2 * settings.max_json_depth and text_too_deep(data, packet._parsed, settings.max_json_depth):
                raise InvalidPacket(too_deep_message("packet data", settings.max_json_depth), stage="decode")
        if self.input_type is not None:
            self._check_input(job)

    def _check_input(self, job: Job) -> None:
        """Validate the data of ``job`` (of each member, when merged) against the block's ``Input``."""
        assert self.input_type is not None
        data = job.packet.json()
        inputs = data["inputs"] if job.members is not None and isinstance(data, dict) else [data]
        for value in inputs:
            try:
                self.input_type.validate(value, "input")
            except ValueError as exc:
                raise InvalidInput(str(exc), stage="decode") from None

    def output_packet(self, job: Job, result: OnDataResult) -> AIOSPacket:
        """The output packet for one ``OnDataResult`` of ``job``."""
        # Every output value is JSON-encoded, a str too (it becomes a JSON string), as the
        # original SDK's json.dumps did: a block's output is a value, never raw text. A str
        # goes straight to the C encoder json.dumps uses for it (no Python frame per packet).
        data = result.output
        data = _json_string(data) if type(data) is str else self.block.output_text(data)
        packet = job.packet
        # Positional: AIOSPacket(session_id, seq_no, data, ts, output_ptr, files, headers).
        return AIOSPacket(
            packet.session_id, packet.seq_no, data, time.time(), packet.output_ptr, result.files, packet.headers
        )


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
