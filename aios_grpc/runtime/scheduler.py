"""``Scheduler``: between ingress (Process streams, queues) and the block's methods.

Ingress hands it ``Job`` objects with ``submit`` (which waits while the bounded queue
is full, so readers stop reading and HTTP/2 flow control slows the senders). Worker
tasks take jobs off the queue in chunks and run a whole chunk through the block's
plain methods in one thread hand-off: a thread hop costs tens of microseconds, as
much as gRPC's own per-message work, so one hop per packet would halve throughput.
The chunk size adapts to how long the block takes per packet, so a slow block gets
chunks of one and keeps every worker thread busy. A fast block (the hop costs more
than its packet) gets one chunk in the pool at a time while the next one gathers
(``_gather``); the other threads stay free for a packet that turns out slow.
``async def`` methods run on the loop instead.

Each job gets exactly one terminal result through ``job.reply``; partial outputs
(generators) come before it. A packet may have at most ``AIOS_MAX_UNSENT_PARTIALS``
partials produced and not yet sent (``PartialGate``): past it a sync generator's
worker thread blocks and an async generator awaits, until the consumer frees places
(the gRPC stream once it wrote them, other consumers as soon as they took them), or
until the caller is gone, when the generator is closed.

With a ``Muxer`` the packets of a group wait in ``MuxStage`` (``muxer.py``) and only
the merged job is queued; with a batcher one ``BatchStage`` task (``batcher.py``)
takes the queue instead of the workers and runs ``on_batch``. ``LoopWatchdog``
(``watchdog.py``) reports user code that blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aios_grpc.errors import (
    BlockCodeError,
    ConfigurationError,
    DeadlineExceeded,
    PacketError,
    ParametersRejected,
    PartialsAbandoned,
    ResourceExhausted,
    Unavailable,
)
from aios_grpc.grouping import Batcher, Muxer
from aios_grpc.job import (
    Job,
    Kind,
    Partial,
    PartialGate,
    Result,
)
from aios_grpc.packet import AIOSPacket, OnDataResult
from aios_grpc.routing import Router
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.batch_stage import BatchStage
from aios_grpc.runtime.mux_stage import MuxStage
from aios_grpc.runtime.queue import JobQueue, wake_first
from aios_grpc.runtime.watchdog import LoopWatchdog
from aios_grpc.settings import Settings
from aios_grpc.telemetry import Telemetry

log = logging.getLogger("aios_grpc.runtime")

_OK = Kind.OK

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


class Scheduler:
    """Runs jobs through a block with bounded queues and a sized thread pool."""

    def __init__(
        self,
        block: BlockAdapter,
        settings: Settings,
        *,
        telemetry: Telemetry | None = None,
        router: Router | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.block = block
        self.settings = settings
        self.telemetry = telemetry or Telemetry()
        # None: every output goes back to the caller. A router is asked per job
        # (``wants``), so the bulk answer path also runs in a served block, whose
        # GraphRouter routes only the packets that name an ``output_ptr``.
        self.router = router
        self.executor = executor or self.make_executor(settings)
        self.muxer: Muxer | None = None
        self.batcher: Batcher | None = None
        self.mux_stage: MuxStage | None = None
        self.batch_stage: BatchStage | None = None
        self.watchdog = LoopWatchdog(settings.loop_block_threshold_s, self._on_loop_lag)
        self.in_flight = 0
        self.accepting = True
        self.completed = 0
        self._queue: JobQueue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        # Streamed (partial) outputs of routed jobs on their way downstream; the job's
        # terminal result waits for them.
        self._partial_routes: dict[Job, list[asyncio.Task[list[AIOSPacket]]]] = {}
        # Guards the creation of a job's PartialGate (a worker thread) against the loop
        # answering the job meanwhile (see _gate and _answer_chunk).
        self._gate_lock = threading.Lock()
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._job_time_s = 0.0  # moving average of block time per packet
        self._chunks_started: list[float] = []  # start times of the chunks now in the thread pool
        self._gathering = False  # a worker is gathering a fast block's next chunk
        self._turn_waiters: deque[asyncio.Future[None]] = deque()
        self._pool_waiters: deque[asyncio.Future[None]] = deque()
        # Packets that arrived while earlier packets of their stream were unanswered
        # (counted by the stream readers): the mark of a client that does not wait.
        self.pipelined_arrivals = 0
        self._pipelined_seen = 0

    # -- lifecycle -------------------------------------------------------------------

    @staticmethod
    def make_executor(settings: Settings) -> ThreadPoolExecutor:
        """The thread pool that runs plain block methods (``settings.workers`` threads)."""
        return ThreadPoolExecutor(settings.workers, thread_name_prefix="aios-block")

    async def configure(self) -> None:
        """Read the block's muxer and batcher (``get_muxer``, ``get_batcher``) once."""
        self.muxer = await self.to_thread(self.block.muxer)
        self.batcher = await self.to_thread(self.block.batcher)
        if self.batcher is None and self.block.has("on_batch") and not self.block.has("on_data"):
            # on_batch alone: batches close at max_chunk or whenever the queue runs dry.
            self.batcher = Batcher(self.settings.max_chunk)

    def muxer_info(self) -> dict[str, Any]:
        """Muxer settings as GetInfo reports them."""
        if self.mux_stage is not None:
            return self.mux_stage.info()
        if self.muxer is None:
            return {"n": 0}
        return {
            "n": self.muxer.N,
            "timeout_s": self.muxer.timeout_s or self.settings.mux_timeout_s,
            "max_open_groups": self.muxer.max_open_groups or self.settings.mux_max_open_groups,
        }

    def batcher_info(self) -> dict[str, Any]:
        """Batcher settings as GetInfo reports them."""
        if self.batch_stage is not None:
            return self.batch_stage.info()
        if self.batcher is None:
            return {"kind": "none"}
        return {
            "kind": self.batcher.kind,
            "n": self.batcher.N,
            "t": self.batcher.T,
            "max_concurrent_batches": self.settings.max_concurrent_batches,
        }

    async def configure_batching(self, data: dict[str, Any]) -> dict[str, Any]:
        """The ``aios.batcher`` management action: change n, t, max_concurrent_batches at run time.

        ``data`` holds any of ``n``, ``t`` and ``max_concurrent_batches``; empty data just
        reports the current settings. The answer adds ``histogram``: calls per batch size.
        """
        if self.batch_stage is None:
            raise ParametersRejected("aios.batcher: this block has no batcher (get_batcher() returned None)")
        unknown = set(data) - {"n", "t", "max_concurrent_batches"}
        if unknown:
            raise ParametersRejected(f"aios.batcher takes n, t and max_concurrent_batches; unknown: {sorted(unknown)}")
        try:
            info = self.batch_stage.configure(**data) if data else self.batch_stage.info()
        except ConfigurationError as exc:
            raise ParametersRejected(f"aios.batcher: {exc}") from None
        # How many on_batch calls had each size since start-up (JSON keys are strings).
        info["histogram"] = {str(k): v for k, v in sorted(self.batch_stage.sizes.items())}
        return info

    def _on_loop_lag(self, seconds: float) -> None:
        self.telemetry.loop_lag(seconds)

    async def start(self) -> None:
        """Create the queue and the worker tasks on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._queue = JobQueue(self.settings.max_queued)
        self._idle = asyncio.Event()
        self._idle.set()
        if self.muxer is not None:
            self.mux_stage = MuxStage(
                self.muxer,
                self.answer,
                self.muxer.timeout_s or self.settings.mux_timeout_s,
                self.muxer.max_open_groups or self.settings.mux_max_open_groups,
                self.telemetry.muxer_groups,
            )
        if self.batcher is not None:
            self.batch_stage = BatchStage(self, self.batcher, self.settings.max_concurrent_batches)
            self._tasks = [asyncio.create_task(self.batch_stage.run(self._queue), name="aios-batcher")]
        else:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"aios-worker-{i}") for i in range(self.settings.workers)
            ]
        self.watchdog.start()

    async def drain(self, timeout_s: float) -> int:
        """Refuse new jobs and wait up to ``timeout_s`` for jobs in flight; returns how many are left."""
        self.accepting = False
        assert self._idle is not None
        # Nothing new will join an open group or batch: answer or run them now.
        if self.mux_stage is not None:
            self.mux_stage.flush("block is draining")
        if self.batch_stage is not None:
            self.batch_stage.flush()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.in_flight

    async def stop(self) -> None:
        """Cancel the workers and answer what is still queued with UNAVAILABLE."""
        self.accepting = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.batch_stage is not None:
            await self.batch_stage.cancel()
        if self.mux_stage is not None:
            self.mux_stage.flush("server is shutting down")
        await self.watchdog.stop()
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                self.answer(job, Result(Kind.ERROR, error=Unavailable("server is shutting down", stage="queue")))
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.router is not None:
            await self.router.close()

    # -- ingress ---------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.qsize() if self._queue is not None else 0

    def note_pipelined(self, count: int) -> None:
        """``count`` packets arrived behind unanswered packets of their stream (a pipelining
        client): the workers' gather waits a little for more (see ``_gather``)."""
        self.pipelined_arrivals += count

    async def submit(self, job: Job) -> None:
        """Queue a job, waiting while the queue is full (backpressure)."""
        if not self._admit(job):
            return
        merged = self._through_muxer(job)
        if merged is None:
            return
        job = merged
        queue = self._queue
        assert queue is not None
        if queue.full():
            await queue.put(job)
        else:
            queue.put_nowait(job)  # skips a coroutine per packet on the common path

    def try_submit(self, job: Job) -> bool:
        """Queue a job when that needs no wait; False, with nothing done, when the queue is full.

        The stream readers call this per packet and fall back to ``submit`` only on a
        full queue, which spares them a coroutine per packet.
        """
        queue = self._queue
        assert queue is not None
        if queue.full():
            return False
        if self.mux_stage is not None or not self.accepting:
            self.submit_nowait(job)  # cannot find the queue full now: nothing ran in between
            return True
        # The common case: _admit spelled out (this runs once per packet).
        self.in_flight += 1
        if self.in_flight == 1:
            self._idle.clear()  # type: ignore[union-attr]
        self.telemetry.packet_received(job)
        queue.put_nowait(job)
        return True

    def try_submit_many(self, jobs: list[Job]) -> int:
        """Queue the leading jobs of ``jobs`` that fit without a wait; how many were queued.

        ``jobs`` come from one request (one source). They are counted and queued in
        one step: a coalesced request pays this once, not once per packet. The caller
        hands the rest, if any, to ``try_submit``/``submit`` in order. With a muxer, or
        while draining, nothing is queued here (0): those go one by one.
        """
        queue = self._queue
        assert queue is not None
        if self.mux_stage is not None or not self.accepting:
            return 0
        room = queue.maxsize - queue.qsize()
        if room < len(jobs):
            if room <= 0:
                return 0
            jobs = jobs[:room]
        n = len(jobs)
        self.in_flight += n
        if self.in_flight == n:
            self._idle.clear()  # type: ignore[union-attr]
        self.telemetry.packets_received(jobs)
        queue.put_many_nowait(jobs)
        return n

    def submit_nowait(self, job: Job) -> None:
        """Queue a job or answer it RESOURCE_EXHAUSTED when the queue is full."""
        if not self._admit(job):
            return
        merged = self._through_muxer(job)
        if merged is None:
            return
        job = merged
        assert self._queue is not None
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.answer(
                job,
                Result(
                    Kind.ERROR,
                    error=ResourceExhausted(
                        f"scheduler queue is full ({self.settings.max_queued} packets, AIOS_MAX_QUEUED)",
                        stage="queue",
                    ),
                ),
            )

    def _through_muxer(self, job: Job) -> Job | None:
        """The job to queue: ``job`` itself, or with a muxer its group's merged job once complete (else None)."""
        if self.mux_stage is None or job.members is not None:
            return job
        merged = self.mux_stage.add(job)
        self.telemetry.muxer_groups(self.mux_stage.open_groups)
        return merged

    def _admit(self, job: Job) -> bool:
        self.in_flight += 1
        assert self._idle is not None
        if self.in_flight == 1:
            self._idle.clear()  # set again by answer() once nothing is in flight
        self.telemetry.packet_received(job)
        if not self.accepting:
            self.answer(job, Result(Kind.ERROR, error=Unavailable("block is draining", stage="queue")))
            return False
        return True

    # -- egress ----------------------------------------------------------------------

    def answer(self, job: Job, result: Result) -> None:
        """Send a terminal result for ``job`` (on the loop's thread); only the first one counts."""
        if job.answered:
            return
        job.answered = True
        try:
            job.reply(result)
        except Exception:
            log.exception("reply for %s/%s failed", job.packet.session_id, job.packet.seq_no)
        self.telemetry.packet_answered(job, result)
        self.in_flight -= len(job.members) if job.members else 1
        self.completed += 1
        if self.in_flight <= 0 and self._idle is not None:
            self._idle.set()

    def answer_each(self, jobs: Sequence[Job], results: Sequence[Result]) -> None:
        """``answer`` each of ``jobs`` with the terminal result at its place, counted in one step.

        The same answers as ``answer`` per job, in order; the telemetry hook, ``in_flight``
        and the idle check are done once for all (a batch's or a chunk's answers).
        """
        skipped: list[int] | None = None
        extra = 0  # members of merged jobs beyond the job itself
        for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
            if job.answered:
                skipped = [i] if skipped is None else [*skipped, i]
                continue
            job.answered = True
            try:
                job.reply(result)
            except Exception:
                log.exception("reply for %s/%s failed", job.packet.session_id, job.packet.seq_no)
            if job.members:
                extra += len(job.members) - 1
        if skipped is not None:  # answered already: not counted again
            jobs = [job for i, job in enumerate(jobs) if i not in skipped]
            results = [result for i, result in enumerate(results) if i not in skipped]
        self.telemetry.packets_answered(jobs, results)
        self.in_flight -= len(jobs) + extra
        self.completed += len(jobs)
        if self.in_flight <= 0 and self._idle is not None:
            self._idle.set()

    def answer_outcomes(self, jobs: Sequence[Job], outcomes: Sequence[list[AIOSPacket] | BaseException | None]) -> None:
        """Answer each job of a batch or chunk from its outcome, as ``_finish`` does.

        The usual outcomes, one output each back to the caller, are answered in one
        step (``answer_each``); any other outcome in the lot sends each through ``_finish``.
        """
        router = self.router
        results = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if type(outcome) is not list or len(outcome) != 1 or (router is not None and router.wants(job)):
                break
            results.append(Result(_OK, outcome[0]))
        else:
            self.answer_each(jobs, results)
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            self._finish(job, outcome)

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
            log.exception("partial reply for %s/%s failed", job.packet.session_id, job.packet.seq_no)
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

    def _routes(self, job: Job) -> bool:
        """Whether ``job``'s outputs go through the router (False: straight back to the caller)."""
        router = self.router
        return router is not None and router.wants(job)

    def _send_partial(self, job: Job, output: AIOSPacket) -> None:
        try:
            job.reply(Result(Kind.PARTIAL, output=output))
        except Exception:
            log.exception("partial reply for %s/%s failed", job.packet.session_id, job.packet.seq_no)

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

    def _finish_streamed(self, job: Job, res: list[AIOSPacket] | BaseException) -> None:
        """``_finish`` for a job that streamed, as it ended (handed over by its worker thread, or async)."""
        gate = job.gate
        if gate is not None and gate.finish():
            return  # _answer_chunk answered it already (the worker was cancelled meanwhile)
        self._finish(job, res)

    # -- workers ---------------------------------------------------------------------

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

    def _run_chunk_sync(self, jobs: list[Job]) -> list[list[AIOSPacket] | BaseException | None]:
        out: list[list[AIOSPacket] | BaseException | None] = []
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
            res: list[AIOSPacket] | BaseException = [self.output_packet(job, o) for o in outputs]
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
        data = packet.data
        settings = self.settings
        if type(data) is not str or len(packet.files) > settings.max_files_per_packet:
            self.block.validate_packet(packet, settings.validate_json, settings.max_files_per_packet)
        elif data and settings.validate_json:
            # The usual packet (JSON text, files within the limit), without validate_packet's frame.
            try:
                packet.check_json()
            except ValueError:
                self.block.validate_packet(packet, True, settings.max_files_per_packet)  # raises InvalidPacket

    def output_packet(self, job: Job, result: OnDataResult) -> AIOSPacket:
        """The output packet for one ``OnDataResult`` of ``job``."""
        data = result.output
        if not isinstance(data, str):
            data = self.block.output_text(data)
        packet = job.packet
        # Positional: AIOSPacket(session_id, seq_no, data, ts, output_ptr, files, headers).
        return AIOSPacket(
            packet.session_id, packet.seq_no, data, time.time(), packet.output_ptr, result.files, packet.headers
        )

    def _finish(self, job: Job, res: list[AIOSPacket] | BaseException | None) -> None:
        if res is None:
            return  # answered from the worker thread already (a job that streamed)
        if isinstance(res, BaseException):
            self._partial_routes.pop(job, None)  # those already sent finish on their own
            if not isinstance(res, PacketError):
                log.error("packet %s/%s failed: %r", job.packet.session_id, job.packet.seq_no, res)
            self.answer(job, Result(Kind.ERROR, error=res))
            return
        if self._routes(job):
            task = asyncio.create_task(self._route(job, res))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            return
        self.answer_outputs(job, res)

    async def _route(self, job: Job, outputs: list[AIOSPacket]) -> None:
        start = time.monotonic()
        try:
            back: list[AIOSPacket] = []
            for streamed in await asyncio.gather(*self._partial_routes.pop(job, []), return_exceptions=True):
                if isinstance(streamed, BaseException):
                    raise streamed
                back.extend(streamed)
            assert self.router is not None
            back.extend(await self.router.route(job, outputs))
        except Exception as exc:
            self.answer(job, Result(Kind.ERROR, error=exc))
            return
        self.telemetry.stage_done(job, "route", time.monotonic() - start)
        self.answer_outputs(job, back)

    def answer_outputs(self, job: Job, outputs: list[AIOSPacket]) -> None:
        """Answer ``job`` OK: one output rides on the terminal result, several come as partials."""
        if len(outputs) == 1:
            self.answer(job, Result(Kind.OK, output=outputs[0]))
            return
        for output in outputs:
            self._send_partial(job, output)
        self.answer(job, Result(Kind.OK))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


__all__ = ["Scheduler"]
