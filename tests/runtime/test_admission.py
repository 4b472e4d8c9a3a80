"""Admission: one non-blocking offer (``try_submit``) that ``submit`` and ``submit_nowait`` call first."""

from __future__ import annotations

import asyncio
from typing import Any

from aios_grpc import OnDataResult
from aios_grpc.errors import ResourceExhausted, Unavailable
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings


class Echo:
    def __init__(self, context: Any) -> None:
        pass

    def on_data(self, entry: Any) -> Any:
        return True, OnDataResult(output={})


async def _stalled(max_queued: int) -> Scheduler:
    """A started scheduler whose worker is cancelled: its queue only fills."""
    scheduler = Scheduler(BlockAdapter(Echo(None)), load_settings(workers=1, max_queued=max_queued))
    await scheduler.configure()
    await scheduler.start()
    scheduler._tasks[0].cancel()
    await asyncio.gather(*scheduler._tasks, return_exceptions=True)
    return scheduler


def _job(n: int, got: list[Result]) -> Job:
    return Job(AIOSPacket(session_id="s", seq_no=n, data="{}"), got.append)


async def test_try_submit_does_nothing_on_a_full_queue() -> None:
    scheduler = await _stalled(1)
    got: list[Result] = []
    assert scheduler.try_submit(_job(1, got))
    assert not scheduler.try_submit(_job(2, got))
    assert scheduler.in_flight == 1 and scheduler.queue_depth == 1 and got == []
    await scheduler.stop()


async def test_submit_nowait_answers_resource_exhausted_on_a_full_queue() -> None:
    scheduler = await _stalled(1)
    got: list[Result] = []
    scheduler.submit_nowait(_job(1, got))
    scheduler.submit_nowait(_job(2, got))
    assert len(got) == 1 and got[0].kind is Kind.ERROR and isinstance(got[0].error, ResourceExhausted)
    assert scheduler.in_flight == 1 and scheduler.completed == 1
    await scheduler.stop()


async def test_submit_waits_for_a_place_then_queues() -> None:
    scheduler = await _stalled(1)
    got: list[Result] = []
    scheduler.submit_nowait(_job(1, got))
    waiting = asyncio.create_task(scheduler.submit(_job(2, got)))
    await asyncio.sleep(0.01)
    assert not waiting.done() and scheduler.in_flight == 2  # counted in, waiting for a place
    assert scheduler._queue is not None
    scheduler._queue.get_nowait()
    await asyncio.wait_for(waiting, 1)
    assert scheduler.queue_depth == 1 and got == []
    scheduler.in_flight = 1
    await scheduler.stop()


async def test_draining_refuses_through_every_path() -> None:
    scheduler = await _stalled(4)
    scheduler.accepting = False
    got: list[Result] = []
    assert scheduler.try_submit(_job(1, got))
    scheduler.submit_nowait(_job(2, got))
    await scheduler.submit(_job(3, got))
    assert [type(r.error) for r in got] == [Unavailable] * 3
    assert scheduler.in_flight == 0 and scheduler.queue_depth == 0
    await scheduler.stop()


async def test_answer_counts_a_job_once() -> None:
    scheduler = await _stalled(4)
    got: list[Result] = []
    job = _job(1, got)
    assert scheduler.try_submit(job)
    scheduler.answer(job, Result(Kind.OK))
    scheduler.answer(job, Result(Kind.ERROR, error=Unavailable("late")))
    assert [r.kind for r in got] == [Kind.OK] and scheduler.in_flight == 0 and scheduler.completed == 1
    await scheduler.stop()
