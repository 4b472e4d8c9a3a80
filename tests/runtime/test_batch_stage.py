"""BatchStage in-process: what happens to packets the batch former holds when the scheduler stops."""

from __future__ import annotations

import asyncio
import threading

from aios_grpc import OnDataResult, PreProcessResult, TestContext, TimeBasedBatcher
from aios_grpc.job import Job, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings


class GatedBatchBlock:
    """on_batch waits for ``gate`` (a threading.Event), so that one batch holds the only slot."""

    def __init__(self, context: object) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[int] = []

    def get_batcher(self) -> TimeBasedBatcher:
        return TimeBasedBatcher(N=8, T=30.0)

    def on_preprocess(self, packet: AIOSPacket) -> tuple[bool, list[PreProcessResult]]:
        return True, [PreProcessResult(packet=packet, extra_data={})]

    def on_batch(self, entries: list[PreProcessResult]) -> list[tuple[bool, OnDataResult]]:
        self.calls.append(len(entries))
        self.started.set()
        self.gate.wait(10)
        return [(True, OnDataResult(output={"ok": True})) for _ in entries]


def _packet(seq_no: int) -> AIOSPacket:
    return AIOSPacket(session_id="s", seq_no=seq_no, data="{}")


def test_stop_answers_packets_held_for_a_busy_slot() -> None:
    block = GatedBatchBlock(TestContext())

    async def main() -> dict[int, list[Result]]:
        sched = Scheduler(BlockAdapter(block), load_settings(loop_block_threshold_s=0))
        await sched.configure()
        await sched.start()
        answers: dict[int, list[Result]] = {k: [] for k in range(4)}
        await sched.submit(Job(_packet(0), answers[0].append))
        # The first batch runs and holds the only slot.
        assert await asyncio.to_thread(block.started.wait, 10)
        # These three wait for the slot (T is 30 s): the batch former holds them.
        for k in (1, 2, 3):
            await sched.submit(Job(_packet(k), answers[k].append))
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(sched.stop())
        await asyncio.sleep(0.05)
        block.gate.set()
        await stopping
        return answers

    answers = asyncio.run(main())
    assert block.calls == [1], "the held packets must not run once the scheduler stops"
    for k in (1, 2, 3):
        assert len(answers[k]) == 1, f"packet {k} answered {len(answers[k])} times"
        error = answers[k][0].error
        assert error is not None and "shutting down" in str(error)
    assert len(answers[0]) == 1
