"""JobQueue: the scheduler's bounded queue keeps asyncio.Queue's behaviour where the scheduler relies on it."""

from __future__ import annotations

import asyncio

import pytest

from aios_grpc.job import Job
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime.queue import JobQueue


def _job(n: int) -> Job:
    return Job(AIOSPacket(session_id="s", seq_no=n), lambda result: None)


def test_bounded_fifo_with_the_asyncio_exceptions():
    queue = JobQueue(2)
    a, b = _job(1), _job(2)
    queue.put_nowait(a)
    queue.put_nowait(b)
    assert queue.full() and queue.qsize() == 2
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(_job(3))
    assert queue.get_nowait() is a
    assert queue.get_nowait() is b
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    with pytest.raises(ValueError, match="maxsize"):
        JobQueue(0)


async def test_put_waits_while_full_and_get_waits_while_empty():
    queue = JobQueue(1)
    first, second = _job(1), _job(2)
    queue.put_nowait(first)
    putter = asyncio.create_task(queue.put(second))
    await asyncio.sleep(0.01)
    assert not putter.done()  # full: the putter waits
    assert queue.get_nowait() is first
    await asyncio.wait_for(putter, 1)
    assert queue.get_nowait() is second
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()  # empty: the getter waits
    third = _job(3)
    queue.put_nowait(third)
    assert await asyncio.wait_for(getter, 1) is third


async def test_a_getter_cancelled_after_its_wake_up_passes_it_on():
    queue = JobQueue(4)
    one = asyncio.create_task(queue.get())
    two = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    job = _job(1)
    queue.put_nowait(job)  # wakes the first getter ...
    one.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(two, 1) is job
    with pytest.raises(asyncio.CancelledError):
        await one
