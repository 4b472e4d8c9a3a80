"""``Scheduler``: between ingress (Process streams, queues) and the block's methods.

Ingress hands it ``Job`` objects: ``try_submit`` (and ``try_submit_many`` for a
coalesced request) is the one non-blocking offer, ``submit`` the one blocking path,
which waits while the bounded queue is full, so readers stop reading and HTTP/2 flow
control slows the senders; ``submit_nowait`` answers RESOURCE_EXHAUSTED instead of
waiting. The scheduler counts each job in flight and answers it exactly once
(``answer``, ``answer_each``, ``answer_outcomes``), through the router when the job's
``output_ptr`` names targets.

The scheduler is built from three parts: this module (lifecycle, admission, answer
bookkeeping), ``workers.py`` (``Workers``: chunk sizing, gathering, one thread hop per
chunk) and ``partials.py`` (``Partials``: streamed outputs, their gate, delivering,
finishing). With a ``Muxer`` the packets of a group wait in ``MuxStage``
(``mux_stage.py``) and only the merged job is queued; with a batcher one ``BatchStage``
task (``batch_stage.py``) takes the queue instead of the workers and runs ``on_batch``.
``LoopWatchdog`` (``watchdog.py``) reports user code that blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aios_grpc._text import quote
from aios_grpc.errors import (
    ConfigurationError,
    PacketError,
    ParametersRejected,
    ResourceExhausted,
    Unavailable,
)
from aios_grpc.grouping import Batcher, Muxer
from aios_grpc.job import Job, Kind, Outcome, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.routing import Router
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.batch_stage import BatchStage
from aios_grpc.runtime.blame import BlockErrorLog
from aios_grpc.runtime.mux_stage import MuxStage
from aios_grpc.runtime.partials import Partials
from aios_grpc.runtime.queue import JobQueue
from aios_grpc.runtime.session_cap import SessionCap
from aios_grpc.runtime.watchdog import LoopWatchdog
from aios_grpc.runtime.workers import Workers
from aios_grpc.settings import Settings
from aios_grpc.telemetry import Telemetry

log = logging.getLogger("aios_grpc.runtime")

_OK = Kind.OK


class Scheduler(Workers, Partials):
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
        # AIOS_MAX_IN_FLIGHT_PER_SESSION: packets over a session's cap wait there, not queued.
        limit = settings.max_in_flight_per_session
        self.session_cap: SessionCap | None = SessionCap(limit) if limit else None
        self.watchdog = LoopWatchdog(settings.loop_block_threshold_s, self._on_loop_lag)
        # Failures of the block's code, logged for its author (rate-limited per call site).
        self.block_errors = BlockErrorLog(block.name)
        self.in_flight = 0
        self.accepting = True
        self.completed = 0
        self._queue: JobQueue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # Packets that arrived while earlier packets of their stream were unanswered
        # (counted by the stream readers): the mark of a client that does not wait.
        self.pipelined_arrivals = 0
        self._init_workers()
        self._init_partials()

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
            self.batch_stage = BatchStage(
                self.batcher,
                self.settings.max_concurrent_batches,
                block=self.block,
                check=self._check,
                # Looked up per call, so that output_packet replaced on the scheduler
                # (as tests do) is the one the batches use.
                output_packet=lambda job, result: self.output_packet(job, result),
                answerer=self,
                telemetry=self.telemetry,
                loop=self._loop,
                executor=self.executor,
                queued=self._queue.qsize,
            )
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
        if self.session_cap is not None:
            for job in self.session_cap.flush():
                self.answer(job, Result(Kind.ERROR, error=Unavailable("server is shutting down", stage="queue")))
        await self.watchdog.stop()
        self.block_errors.flush()
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
        if self.try_submit(job):
            return
        merged = self._admitted(job)  # the queue is full: wait for a place
        if merged is not None:
            assert self._queue is not None
            await self._queue.put(merged)

    def try_submit(self, job: Job) -> bool:
        """Queue a job when that needs no wait; False, with nothing done, when the queue is full.

        The one non-blocking offer: ``submit`` and ``submit_nowait`` call it first. The
        stream readers call it per packet and fall back to ``submit`` only on a full
        queue, which spares them a coroutine per packet.
        """
        queue = self._queue
        assert queue is not None
        if queue.full():
            return False
        if self.mux_stage is not None or not self.accepting or self.session_cap is not None:
            merged = self._admitted(job)
            if merged is not None:
                queue.put_nowait(merged)  # cannot find the queue full now: nothing ran in between
            return True
        # The common case, once per packet: _admitted without the muxer and the refusal.
        self._count_in(1)
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
        if self.mux_stage is not None or not self.accepting or self.session_cap is not None:
            return 0
        room = queue.maxsize - queue.qsize()
        if room < len(jobs):
            if room <= 0:
                return 0
            jobs = jobs[:room]
        n = len(jobs)
        self._count_in(n)
        self.telemetry.packets_received(jobs)
        queue.put_many_nowait(jobs)
        return n

    def submit_nowait(self, job: Job) -> None:
        """Queue a job or answer it RESOURCE_EXHAUSTED when the queue is full."""
        if self.try_submit(job):
            return
        merged = self._admitted(job)  # the queue is full
        if merged is not None:
            self.answer(
                merged,
                Result(
                    Kind.ERROR,
                    error=ResourceExhausted(
                        f"scheduler queue is full ({self.settings.max_queued} packets, AIOS_MAX_QUEUED)",
                        stage="queue",
                    ),
                ),
            )

    def _count_in(self, n: int) -> None:
        """``n`` more jobs in flight (the idle event is set again by the answers)."""
        self.in_flight += n
        if self.in_flight == n:
            self._idle.clear()  # type: ignore[union-attr]

    def _admitted(self, job: Job) -> Job | None:
        """Count ``job`` in; the job to queue: ``job`` itself, or with a muxer its group's
        merged job once complete; None when there is none (refused while draining, or
        its group still open)."""
        self._count_in(1)
        self.telemetry.packet_received(job)
        if not self.accepting:
            self.answer(job, Result(Kind.ERROR, error=Unavailable("block is draining", stage="queue")))
            return None
        if self.mux_stage is None or job.members is not None:
            merged: Job | None = job
        else:
            merged = self.mux_stage.add(job)
            self.telemetry.muxer_groups(self.mux_stage.open_groups)
        if merged is not None and self.session_cap is not None and not self.session_cap.admit(merged):
            return None  # waits for its session's turn (session_cap.py)
        return merged

    def _session_turns(self, jobs: Sequence[Job]) -> None:
        """Queue the jobs that waited for the sessions of the answered ``jobs``."""
        assert self.session_cap is not None and self._queue is not None
        for job in self.session_cap.release(jobs):
            if not self._queue.full():
                self._queue.put_nowait(job)
            else:
                task = asyncio.create_task(self._queue.put(job))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    # -- egress ----------------------------------------------------------------------

    def answer(self, job: Job, result: Result) -> None:
        """Send a terminal result for ``job`` (on the loop's thread); only the first one counts."""
        self.answer_each((job,), (result,))

    def answer_each(self, jobs: Sequence[Job], results: Sequence[Result]) -> None:
        """``answer`` each of ``jobs`` with the terminal result at its place, counted in one step.

        The one body of the answers: replies in order, then the telemetry hook,
        ``in_flight`` and the idle check once for all (a batch's or a chunk's answers).
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
                log.exception("reply for %s/%s failed", quote(job.packet.session_id), job.packet.seq_no)
            if job.members:
                extra += len(job.members) - 1
        if skipped is not None:  # answered already: not counted again
            jobs = [job for i, job in enumerate(jobs) if i not in skipped]
            results = [result for i, result in enumerate(results) if i not in skipped]
        if self.session_cap is not None:
            self._session_turns(jobs)
        self.telemetry.packets_answered(jobs, results)
        self.in_flight -= len(jobs) + extra
        self.completed += len(jobs)
        if self.in_flight <= 0 and self._idle is not None:
            self._idle.set()

    def answer_outcomes(self, jobs: Sequence[Job], outcomes: Sequence[Outcome | None]) -> None:
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

    def _routes(self, job: Job) -> bool:
        """Whether ``job``'s outputs go through the router (False: straight back to the caller)."""
        router = self.router
        return router is not None and router.wants(job)

    def _finish(self, job: Job, res: Outcome | None) -> None:
        if res is None:
            return  # answered from the worker thread already (a job that streamed)
        if isinstance(res, BaseException):
            self._partial_routes.pop(job, None)  # those already sent finish on their own
            if not isinstance(res, PacketError):
                log.error("packet %s/%s failed: %s", quote(job.packet.session_id), job.packet.seq_no, quote(res, 500))
            else:
                # The packet's span (tracing on) or the caller's trace context, for JSON logs.
                traceparent = getattr(job.span, "key", None) or (job.trace or {}).get("traceparent")
                self.block_errors.report(res, job.packet.session_id, job.packet.seq_no, traceparent)
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


__all__ = ["Scheduler"]
