"""A chunk cancelled at shutdown answers only the packets not answered yet: each packet is answered and counted once."""

from __future__ import annotations

import asyncio

from aios_grpc import OnDataResult
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Telemetry


class Counting(Telemetry):
    def __init__(self) -> None:
        self.answered = 0

    def packet_answered(self, job, result) -> None:
        self.answered += 1


class HalfHangs:
    """async on_data: even packets answer at once, odd ones never finish."""

    def __init__(self, context):
        pass

    async def on_data(self, entry):
        if entry.packet.seq_no % 2:
            await asyncio.Event().wait()
        return True, OnDataResult(output={"n": entry.packet.seq_no})


async def _started(**settings) -> tuple[Scheduler, Counting]:
    telemetry = Counting()
    scheduler = Scheduler(BlockAdapter(HalfHangs(None)), load_settings(**settings), telemetry=telemetry)
    await scheduler.configure()
    await scheduler.start()
    return scheduler, telemetry


async def test_a_second_terminal_answer_is_dropped_and_not_counted():
    scheduler, telemetry = await _started(workers=1)
    got: list = []
    job = Job(AIOSPacket(session_id="s", seq_no=1, data="{}"), got.append)
    scheduler.in_flight += 1  # as submit() counts it
    scheduler.answer(job, Result(Kind.OK))
    scheduler.answer(job, Result(Kind.ERROR, error=RuntimeError("late")))
    assert [r.kind for r in got] == [Kind.OK]
    assert telemetry.answered == 1
    assert scheduler.in_flight == 0
    await scheduler.stop()


async def test_stop_answers_hanging_async_packets_once_and_leaves_answered_ones_alone():
    scheduler, telemetry = await _started(workers=4)
    replies: dict[int, list] = {n: [] for n in range(4)}
    for n in range(4):
        await scheduler.submit(Job(AIOSPacket(session_id=f"s{n}", seq_no=n, data="{}"), replies[n].append))
    for _ in range(300):  # until the even packets are answered (the odd ones hang)
        if sum(len(r) for r in replies.values()) == 2:
            break
        await asyncio.sleep(0.01)
    await scheduler.stop()
    assert all(len(r) == 1 for r in replies.values()), replies
    assert [replies[n][0].kind for n in range(4)] == [Kind.OK, Kind.ERROR] * 2
    assert telemetry.answered == 4
    assert scheduler.in_flight == 0
