"""``BatchStage``: forms batches for ``on_batch`` from every stream's packets.

One task takes packets off the scheduler's queue and closes a batch when

- it holds ``n`` packets, or
- nothing more is queued and a batch may run now (fewer than
  ``max_concurrent_batches`` are running): a lone request never waits, or
- ``t`` seconds passed since its first packet arrived (``TimeBasedBatcher``); a
  plain ``Batcher`` has no time limit.

While every run slot is busy the open batch keeps taking packets (it could not run
earlier anyway), which is what grows batches under load; a batch closed by ``n`` or
``t`` then waits for a slot, and later packets go to the next batch. Each closed batch runs
``on_preprocess`` per packet and then ``on_batch`` on the entries, all in one
thread hand-off; when ``on_preprocess`` yields more entries than ``n``, they go to
``on_batch`` in slices of at most ``n``. A failure of one ``on_batch`` call
(an exception or a result of the wrong length) answers only the packets in that
call; ``(False, "error")`` for one entry fails only its packet.

When more packets wait for a run slot, a batch of several packets gives up its slot
as soon as ``on_batch`` returned and its output packets (the JSON encoding of each
result) are made in the scheduler's shared pool, while the next batch runs: a forward
pass lets go of the GIL, so the two overlap. A lone batch does it all in its thread.

Batches run on the stage's own threads, one per run slot, not on the scheduler's
shared pool: a batch takes the lowest free slot, so while one batch runs at a time
every batch runs on the same thread and finds its caches, and the block's per-thread
state (torch's, say), warm; in the shared pool consecutive batches alternate threads.

``n``, ``t`` and ``max_concurrent_batches`` can change while serving
(``configure``); the next batch uses the new values.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aios_grpc.errors import BlockCodeError, ConfigurationError, PacketError, Unavailable
from aios_grpc.grouping import Batcher
from aios_grpc.job import Answerer, Job, Kind, Outcome, Result
from aios_grpc.packet import AIOSPacket, OnDataResult, PreProcessResult
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.queue import JobQueue
from aios_grpc.telemetry import Telemetry

log = logging.getLogger("aios_grpc.runtime")


class BatchStage:
    """Batch forming and running for one scheduler.

    It gets what it needs passed in, not from the scheduler: the block adapter, the
    per-packet ``check``, ``output_packet`` (an ``OnDataResult`` to the output packet),
    the ``answerer`` its batches' answers go to, ``telemetry``, the running ``loop``,
    the shared thread pool (``executor``, where a batch's output packets are made while
    the next batch runs) and ``queued`` (how many jobs wait in the queue now).
    """

    def __init__(
        self,
        batcher: Batcher,
        max_concurrent: int,
        *,
        block: BlockAdapter,
        check: Callable[[Job], None],
        output_packet: Callable[[Job, OnDataResult], AIOSPacket],
        answerer: Answerer,
        telemetry: Telemetry,
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
        queued: Callable[[], int],
    ) -> None:
        self.block = block
        self.check = check
        self.output_packet = output_packet
        self.answerer = answerer
        self.telemetry = telemetry
        self.loop = loop
        self.executor = executor
        self.queued = queued
        self.kind = batcher.kind
        self.n = batcher.N
        self.t = batcher.T
        self.max_concurrent = max_concurrent
        self.running = 0
        self.flushing = False
        self.sizes: Counter[int] = Counter()
        self._slot_free = asyncio.Event()
        # Packets taken off the queue for the batch being formed, not yet running.
        self._held: list[Job] | None = None
        self._tasks: dict[asyncio.Task[None], list[Job]] = {}
        self._started: set[asyncio.Task[Any]] = set()
        # One single-thread pool per run slot (created on first use), and the slots in use.
        self._pools: dict[int, ThreadPoolExecutor] = {}
        self._busy: set[int] = set()

    # -- settings --------------------------------------------------------------------

    def configure(self, n: Any = None, t: Any = None, max_concurrent_batches: Any = None) -> dict[str, Any]:
        """Change the batch settings at run time; returns them (see ``info``)."""
        new_n, new_t, new_c = self.n, self.t, self.max_concurrent
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int | float) or int(n) != n or n < 1:
                raise ConfigurationError(f"batcher n must be an integer >= 1, got {n!r}")
            new_n = int(n)
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
                raise ConfigurationError(f"batcher t must be a number of seconds >= 0, got {t!r}")
            new_t = float(t)
        if max_concurrent_batches is not None:
            c = max_concurrent_batches
            if isinstance(c, bool) or not isinstance(c, int | float) or int(c) != c or c < 1:
                raise ConfigurationError(f"max_concurrent_batches must be an integer >= 1, got {c!r}")
            new_c = int(c)
        self.n, self.t, self.max_concurrent = new_n, new_t, new_c
        for slot in [s for s in self._pools if s >= new_c and s not in self._busy]:
            self._drop_slot(slot)  # a busy one goes when its batch ends (_give_slot)
        if new_t > 0 and self.kind == "batcher":
            self.kind = "time"
        self._slot_free.set()  # a larger limit may let a waiting batch go now
        log.info("batcher: n=%d t=%gs max_concurrent_batches=%d", self.n, self.t, self.max_concurrent)
        return self.info()

    def info(self) -> dict[str, Any]:
        """Settings as GetInfo reports them."""
        return {"kind": self.kind, "n": self.n, "t": self.t, "max_concurrent_batches": self.max_concurrent}

    # -- forming -----------------------------------------------------------------------

    async def run(self, queue: JobQueue) -> None:
        """Form batches until cancelled; packets taken off the queue and not yet running are answered then."""
        try:
            while True:
                first = await queue.get()
                self._held = jobs = [first]
                await self._form(queue, jobs)
                self._held = None
                self.running += 1
                task = asyncio.create_task(self._run_batch(jobs))
                self._tasks[task] = jobs
                task.add_done_callback(self._batch_done)
        except asyncio.CancelledError:
            held, self._held = self._held, None
            if held:
                answer_all(self.answerer, held, Unavailable("server is shutting down", stage="batch"))
            raise

    async def _form(self, queue: JobQueue, jobs: list[Job]) -> None:
        """Fill ``jobs`` (its first packet in) by the batch rules, until it may run."""
        # A plain Batcher has no time limit; the other rules still close its batches.
        close_at = jobs[0].received + self.t if self.kind == "time" else math.inf
        # While every slot is busy the batch could not run anyway: let the queue
        # fill, and take what is there when a slot frees (or at T). Waiting once
        # per batch, not once per arriving packet, keeps this cheap under load.
        while self.running >= self.max_concurrent and not self.flushing:
            remaining = close_at - time.monotonic()
            if remaining <= 0:
                break
            self._slot_free.clear()
            try:
                await asyncio.wait_for(self._slot_free.wait(), min(remaining, 3600.0))
            except TimeoutError:
                break
        while len(jobs) < self.n:
            try:
                jobs.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        while self.running >= self.max_concurrent:
            self._slot_free.clear()
            await self._slot_free.wait()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        jobs = self._tasks.pop(task, None)
        started = task in self._started
        self._started.discard(task)
        if task.cancelled() and jobs is not None and not started:
            # Cancelled before its first step: its own handler never ran.
            self.running -= 1
            self._slot_free.set()
            answer_all(self.answerer, jobs, Unavailable("server is shutting down", stage="batch"))

    def flush(self) -> None:
        """Close the open batch now and every later one as soon as it is queued (drain)."""
        self.flushing = True
        self._slot_free.set()

    async def cancel(self) -> None:
        """Cancel running batches (their packets are answered UNAVAILABLE) and end the stage's threads."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A batch still in its thread runs to its end (a thread cannot be interrupted);
        # nothing waits for it, and the thread then exits.
        for slot in list(self._pools):
            self._drop_slot(slot)

    # -- run slots ---------------------------------------------------------------------

    def _take_slot(self) -> tuple[int, ThreadPoolExecutor]:
        """The lowest free run slot and its thread, now marked busy (``_give_slot`` frees it)."""
        slot = 0
        while slot in self._busy:
            slot += 1
        self._busy.add(slot)
        pool = self._pools.get(slot)
        if pool is None:
            # Named like the shared pool's threads: Block.run does not wait for them at exit.
            pool = self._pools[slot] = ThreadPoolExecutor(1, thread_name_prefix=f"aios-block-batch-{slot}")
        return slot, pool

    def _give_slot(self, slot: int) -> None:
        self._busy.discard(slot)
        if slot >= self.max_concurrent and slot in self._pools:  # the limit was lowered while it ran
            self._drop_slot(slot)

    def _drop_slot(self, slot: int) -> None:
        self._busy.discard(slot)
        self._pools.pop(slot).shutdown(wait=False, cancel_futures=True)

    # -- running -----------------------------------------------------------------------

    async def _run_batch(self, jobs: list[Job]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._started.add(task)
        start = time.monotonic()
        slot, pool = self._take_slot()
        outcomes: list[Outcome] | _Encode
        try:
            self.telemetry.stages_done(jobs, "queue", [start - job.received for job in jobs])
            block = self.block
            if not (block.is_async.get("on_preprocess") or block.is_async.get("on_batch")):
                outcomes = await self.loop.run_in_executor(pool, self._batch_sync, jobs)
            else:
                outcomes = await self._batch_async(jobs, pool)
        except asyncio.CancelledError:
            answer_all(self.answerer, jobs, Unavailable("server is shutting down", stage="batch"))
            raise
        except Exception as exc:  # a bug in the SDK; still answer every packet
            outcomes = _internal_error(jobs, exc, "batch")
        finally:
            self._give_slot(slot)
            self.running -= 1
            self._slot_free.set()
        took = time.monotonic() - start
        if isinstance(outcomes, _Encode):
            try:
                outcomes = await self.loop.run_in_executor(self.executor, self._encode, jobs, outcomes.results)
            except asyncio.CancelledError:
                answer_all(self.answerer, jobs, Unavailable("server is shutting down", stage="batch"))
                raise
            except Exception as exc:  # a bug in the SDK; still answer every packet
                outcomes = _internal_error(jobs, exc, "output of a batch")
        self.telemetry.stages_done(jobs, "batch", [took] * len(jobs))
        assert not isinstance(outcomes, _Encode)
        self.answerer.answer_outcomes(jobs, outcomes)

    def _batch_sync(self, jobs: list[Job]) -> list[Outcome] | _Encode:
        check = self.check
        preprocess = self.block.preprocess_sync
        entries: list[list[PreProcessResult] | BaseException] = []
        flat: list[PreProcessResult] = []
        single = True  # every packet passed and gave exactly one entry
        for job in jobs:
            try:
                check(job)
                got = preprocess(job.packet)
            except Exception as exc:
                entries.append(exc)
                single = False
                continue
            entries.append(got)
            if len(got) == 1:
                flat.append(got[0])
            else:
                single = False
        on_batch = self.block.methods["on_batch"]
        if not (single and len(flat) <= self.n):
            return self._apply(jobs, entries, on_batch)
        # The usual batch, one entry per packet in one on_batch call, without _apply's mapping.
        results = self._call(on_batch, flat, jobs)
        if len(jobs) > 1 and (self._held is not None or self.queued()):
            # More packets wait for this run slot: give it up now and make the output
            # packets (JSON encoding) in another thread, so that the next batch's
            # on_batch (a forward pass that lets go of the GIL, say) runs meanwhile.
            return _Encode(results)
        return self._encode(jobs, results)

    def _encode(self, jobs: list[Job], results: list[OnDataResult | BaseException | None]) -> list[Outcome]:
        """The outcome per packet of a one-entry-per-packet batch: its output packet, or its error."""
        output_packet = self.output_packet
        out: list[Outcome] = []
        for job, res in zip(jobs, results, strict=True):
            if res is None:
                out.append([])
            elif isinstance(res, BaseException):
                out.append(res)
            else:
                try:
                    out.append([output_packet(job, res)])
                except Exception as exc:
                    out.append(exc)
        return out

    async def _batch_async(self, jobs: list[Job], pool: ThreadPoolExecutor) -> list[Outcome]:
        block = self.block
        loop = asyncio.get_running_loop()
        entries: list[list[PreProcessResult] | BaseException] = []
        for job in jobs:
            try:
                self.check(job)
                if block.is_async.get("on_preprocess"):
                    ret = await block.methods["on_preprocess"](job.packet)
                    entries.append(block.check_preprocess(ret))
                else:
                    entries.append(await loop.run_in_executor(pool, block.preprocess_sync, job.packet))
            except PacketError as exc:
                entries.append(exc)
            except Exception as exc:
                entries.append(BlockCodeError(f"on_preprocess raised {type(exc).__name__}: {exc}", stage="preprocess"))
        on_batch = block.methods["on_batch"]
        rets: list[Any] = []
        for chunk in self._chunks(entries):
            try:
                if block.is_async.get("on_batch"):
                    rets.append(await on_batch(chunk))
                else:
                    rets.append(await loop.run_in_executor(pool, on_batch, chunk))
            except Exception as exc:
                rets.append(_Raised(exc))
        replay = iter(rets)

        def call(chunk: list[PreProcessResult]) -> Any:
            ret = next(replay)
            if isinstance(ret, _Raised):
                raise ret.exc
            return ret

        return self._apply(jobs, entries, call)

    def _chunks(self, entries: list[list[PreProcessResult] | BaseException]) -> list[list[PreProcessResult]]:
        flat = [e for item in entries if not isinstance(item, BaseException) for e in item]
        n = max(1, self.n)
        return [flat[i : i + n] for i in range(0, len(flat), n)] if flat else []

    def _apply(
        self,
        jobs: list[Job],
        entries: list[list[PreProcessResult] | BaseException],
        call: Any,
    ) -> list[Outcome]:
        """Run ``call`` on each slice of entries and map the results back to packets."""
        owner: list[int] = []  # job index of each flat entry
        for i, item in enumerate(entries):
            if not isinstance(item, BaseException):
                owner.extend([i] * len(item))
        per_job: list[list[OnDataResult] | BaseException] = [
            item if isinstance(item, BaseException) else [] for item in entries
        ]
        pos = 0
        for chunk in self._chunks(entries):
            owners = owner[pos : pos + len(chunk)]
            pos += len(chunk)
            results = self._call(call, chunk, [jobs[i] for i in dict.fromkeys(owners)])
            for idx, res in zip(owners, results, strict=True):
                current = per_job[idx]
                if isinstance(current, BaseException):
                    continue  # the packet already failed; its first error stands
                if isinstance(res, BaseException):
                    per_job[idx] = res
                elif res is not None:
                    current.append(res)
        out: list[Outcome] = []
        for job, done in zip(jobs, per_job, strict=True):
            if isinstance(done, BaseException):
                out.append(done)
                continue
            try:
                out.append([self.output_packet(job, o) for o in done])
            except Exception as exc:
                out.append(exc)
        return out

    def _call(
        self, call: Any, chunk: list[PreProcessResult], jobs: list[Job]
    ) -> list[OnDataResult | BaseException | None]:
        """``call(chunk)`` (one ``on_batch`` call on entries from ``jobs``) checked: a result or error per entry."""
        self.sizes[len(chunk)] += 1
        self.telemetry.batch_formed(len(chunk), jobs)
        try:
            return self._check_results(call(chunk), len(chunk))
        except PacketError as exc:
            return [exc] * len(chunk)
        except Exception as exc:
            err = BlockCodeError(f"on_batch raised {type(exc).__name__}: {exc}", stage="batch")
            return [err] * len(chunk)

    def _check_results(self, ret: Any, expected: int) -> list[OnDataResult | BaseException | None]:
        if inspect.isgenerator(ret) or not isinstance(ret, list | tuple):
            raise BlockCodeError(
                f"on_batch must return a list with one (ok, result) per entry, got {type(ret).__name__}",
                stage="batch",
            )
        if len(ret) != expected:
            raise BlockCodeError(
                f"on_batch returned {len(ret)} results for {expected} entries; it must return one per entry",
                stage="batch",
            )
        out: list[OnDataResult | BaseException | None] = []
        check_data = self.block.check_data
        for item in ret:
            # The common answer, (True, OnDataResult), checked inline: this runs per entry.
            if type(item) is tuple and len(item) == 2 and item[0] is True and type(item[1]) is OnDataResult:
                out.append(item[1])
                continue
            try:
                out.append(check_data(item, stage="batch"))
            except PacketError as exc:
                out.append(exc)
        return out


def _internal_error(jobs: list[Job], exc: Exception, what: str) -> list[Outcome]:
    """Log an SDK bug met while running ``jobs`` and the INTERNAL outcome each of them gets."""
    log.exception("%s of %d packets failed in the scheduler", what, len(jobs))
    return [BlockCodeError(f"internal error: {exc}", stage="batch")] * len(jobs)


class _Encode:
    """What a batch's thread hands back when another thread makes its output packets."""

    __slots__ = ("results",)

    def __init__(self, results: list[OnDataResult | BaseException | None]) -> None:
        self.results = results


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def answer_all(answerer: Answerer, jobs: list[Job], error: BaseException) -> None:
    """Answer every job with ``error`` (used when a batch cannot run at all)."""
    for job in jobs:
        answerer.answer(job, Result(Kind.ERROR, error=error))
