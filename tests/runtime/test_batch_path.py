"""The batch path in-process: the stage's own threads, the common-shape fast path, output JSON."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from typing import Any

import pytest

from aios_grpc import FileInfo, OnDataResult, PreProcessResult, TestContext, TimeBasedBatcher
from aios_grpc.errors import BlockCodeError, InvalidPacket
from aios_grpc.job import Job, Result
from aios_grpc.packet import AIOSPacket
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.settings import load_settings


class ThreadsBlock:
    """Records the thread of every call; on_batch waits for ``gate`` when an entry asks for it."""

    def __init__(self, context: object) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)
        self.threads: list[str] = []

    def get_batcher(self) -> TimeBasedBatcher:
        return TimeBasedBatcher(N=4, T=0.0)

    def on_preprocess(self, packet: AIOSPacket) -> tuple[bool, list[PreProcessResult]]:
        self.threads.append(threading.current_thread().name)
        return True, [PreProcessResult(packet=packet, extra_data=packet.json())]

    def on_batch(self, entries: list[PreProcessResult]) -> list[tuple[bool, OnDataResult]]:
        self.threads.append(threading.current_thread().name)
        if any(e.extra_data.get("wait") for e in entries):
            self.waiting.release()
            self.gate.wait(10)
        return [(True, OnDataResult(output={"i": e.extra_data.get("i")})) for e in entries]


def _packet(seq_no: int, **data: Any) -> AIOSPacket:
    return AIOSPacket(session_id=f"s{seq_no}", seq_no=seq_no, data=json.dumps({"i": seq_no, **data}))


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("aios-block-batch")]


async def _started(block: Any, **settings: Any) -> Scheduler:
    sched = Scheduler(BlockAdapter(block), load_settings(loop_block_threshold_s=0, **settings))
    await sched.configure()
    await sched.start()
    return sched


async def _answer(sched: Scheduler, packet: AIOSPacket) -> Result:
    done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
    await sched.submit(Job(packet, done.set_result))
    return await done


def test_batches_run_on_one_thread_of_their_own_not_the_shared_pool() -> None:
    block = ThreadsBlock(TestContext())

    async def main() -> None:
        sched = await _started(block, workers=4)
        try:
            for k in range(12):  # one after another: every batch finds slot 0 free
                assert (await _answer(sched, _packet(k))).output is not None
        finally:
            await sched.stop()

    asyncio.run(main())
    assert len(block.threads) == 24
    assert len(set(block.threads)) == 1, f"batches ran on {sorted(set(block.threads))}"
    assert block.threads[0].startswith("aios-block-batch-0")


def test_concurrent_batches_take_a_thread_each_and_a_lowered_limit_ends_the_extra_one() -> None:
    block = ThreadsBlock(TestContext())

    async def main() -> None:
        sched = await _started(block, max_concurrent_batches=2)
        stage = sched.batch_stage
        assert stage is not None
        try:
            first = asyncio.ensure_future(_answer(sched, _packet(0, wait=True)))
            assert await asyncio.to_thread(block.waiting.acquire, True, 10)
            second = asyncio.ensure_future(_answer(sched, _packet(1, wait=True)))
            assert await asyncio.to_thread(block.waiting.acquire, True, 10)
            running = {t.name.split("_")[0] for t in _batch_threads()}
            assert running == {"aios-block-batch-0", "aios-block-batch-1"}
            # Lowered while both run: slot 1's thread ends once its batch is done.
            stage.configure(max_concurrent_batches=1)
            assert sorted(stage._pools) == [0, 1]
            block.gate.set()
            assert (await first).output is not None and (await second).output is not None
            assert sorted(stage._pools) == [0]
            for thread in _batch_threads():
                if thread.name.startswith("aios-block-batch-1"):
                    thread.join(5)
                    assert not thread.is_alive()
            assert (await _answer(sched, _packet(2))).output is not None
            assert block.threads[-1].startswith("aios-block-batch-0")
            stage.configure(max_concurrent_batches=3)  # raised again: slots come back as needed
            assert (await _answer(sched, _packet(3))).output is not None
        finally:
            await sched.stop()

    asyncio.run(main())


def test_stop_ends_the_batch_threads_even_with_a_batch_still_running() -> None:
    block = ThreadsBlock(TestContext())

    async def main() -> Result:
        sched = await _started(block)
        answer = asyncio.ensure_future(_answer(sched, _packet(0, wait=True)))
        assert await asyncio.to_thread(block.waiting.acquire, True, 10)
        await sched.stop()
        assert sched.batch_stage is not None and sched.batch_stage._pools == {}
        block.gate.set()  # the batch in its thread ends now; nothing waits for it
        return await answer

    result = asyncio.run(main())
    assert result.error is not None and "shutting down" in str(result.error)
    deadline = time.monotonic() + 5
    while _batch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _batch_threads() == []


class ShapesBlock:
    """One entry per packet (the fast path); on_batch answers each entry as its data asks."""

    def get_batcher(self) -> TimeBasedBatcher:
        return TimeBasedBatcher(N=16, T=0.0)

    def on_preprocess(self, packet: AIOSPacket) -> tuple[bool, list[PreProcessResult]]:
        return True, [PreProcessResult(packet=packet, extra_data=packet.json())]

    def on_batch(self, entries: list[PreProcessResult]) -> list[Any]:
        out: list[Any] = []
        for e in entries:
            how = e.extra_data.get("how")
            if how == "none":
                out.append((True, None))
            elif how == "fail":
                out.append((False, "no"))
            elif how == "dict":
                out.append((True, {"plain": 1}))
            elif how == "subclass":
                out.append((True, MyResult(output={"sub": 1})))
            elif how == "set":
                out.append((True, OnDataResult(output={"bad": {1}})))
            elif how == "shape":
                out.append("not a pair")
            else:
                out.append((True, OnDataResult(output={"i": e.extra_data["i"]})))
        return out


class MyResult(OnDataResult):
    pass


def test_each_result_shape_maps_to_its_own_packet_in_one_batch() -> None:
    block = ShapesBlock()
    hows = ["ok", "none", "fail", "dict", "subclass", "set", "shape", "ok"]

    async def main() -> list[Result]:
        sched = await _started(block)
        assert sched.batch_stage is not None
        jobs_out: list[list[Result]] = [[] for _ in hows]
        jobs = [Job(_packet(k, how=how), jobs_out[k].append) for k, how in enumerate(hows)]
        outcomes = await asyncio.to_thread(sched.batch_stage._batch_sync, jobs)
        await sched.stop()
        assert sched.batch_stage.sizes == {len(hows): 1}, "one on_batch call for the whole batch"
        return outcomes

    out = asyncio.run(main())
    assert [json.loads(p.data) for p in out[0]] == [{"i": 0}]
    assert out[1] == []
    assert "on_batch failed: no" in str(out[2])
    assert [json.loads(p.data) for p in out[3]] == [{"plain": 1}]
    assert [json.loads(p.data) for p in out[4]] == [{"sub": 1}]
    assert isinstance(out[5], BlockCodeError) and "not JSON-serializable: Object of type set" in str(out[5])
    assert isinstance(out[6], BlockCodeError) and "on_batch must return" in str(out[6])
    assert [json.loads(p.data) for p in out[7]] == [{"i": 7}]
    assert out[0][0].session_id == "s0" and out[7][0].seq_no == 7


@pytest.mark.parametrize(
    "value",
    [
        {"label": 3, "logits": [0.1, -2.5e-07, 1e300, 0.30000000000000004]},
        ["é", "\u2028", "\x00", {"k": None, "t": True}],
        {"nan": math.nan, "inf": -math.inf},
        [],
        7,
        "text",
    ],
)
def test_output_text_is_json_dumps(value: Any) -> None:
    assert BlockAdapter.output_text(value) == json.dumps(value)


def test_output_text_errors_are_json_dumps_errors() -> None:
    with pytest.raises(BlockCodeError, match="output is not JSON-serializable: Object of type set is not"):
        BlockAdapter.output_text({"x": {1, 2}})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(BlockCodeError, match="Circular reference detected"):
        BlockAdapter.output_text({"x": cycle})
    # Nothing is left behind by the failures (no markers dict to go stale).
    assert BlockAdapter.output_text({"x": [1]}) == '{"x": [1]}'


def test_check_of_packets_with_files() -> None:
    block = ShapesBlock()
    sched = Scheduler(BlockAdapter(block), load_settings(loop_block_threshold_s=0, max_files_per_packet=2))
    file = FileInfo('{"dtype": "float32"}', b"\0" * 8)
    good = AIOSPacket(session_id="s", seq_no=1, data='{"a": 1}', files=[file, file])
    sched._check(Job(good, lambda r: None))
    assert good.json() == {"a": 1}
    bad_json = AIOSPacket(session_id="s", seq_no=2, data="{nope", files=[file])
    with pytest.raises(InvalidPacket, match="not valid JSON"):
        sched._check(Job(bad_json, lambda r: None))
    too_many = AIOSPacket(session_id="s", seq_no=3, data="{}", files=[file, file, file])
    with pytest.raises(InvalidPacket, match="packet has 3 files; at most 2"):
        sched._check(Job(too_many, lambda r: None))
    raw = AIOSPacket(session_id="s", seq_no=4, data=b"{nope", files=[file])  # bytes are not checked
    sched._check(Job(raw, lambda r: None))


class CallsBlock:
    """Counts its on_batch calls (batches of at most 4)."""

    def __init__(self, context: object) -> None:
        self.calls = 0
        self.second_call = threading.Event()

    def get_batcher(self) -> TimeBasedBatcher:
        return TimeBasedBatcher(N=4, T=0.0)

    def on_preprocess(self, packet: AIOSPacket) -> tuple[bool, list[PreProcessResult]]:
        return True, [PreProcessResult(packet=packet)]

    def on_batch(self, entries: list[PreProcessResult]) -> list[tuple[bool, OnDataResult]]:
        self.calls += 1
        if self.calls == 2:
            self.second_call.set()
        return [(True, OnDataResult(output={"n": self.calls})) for _ in entries]


def test_the_next_batch_runs_while_the_outputs_of_the_last_one_are_made() -> None:
    """With packets waiting, a batch gives up its run slot once on_batch returned: its output
    packets (JSON) are made in another thread while the next batch's on_batch runs."""
    block = CallsBlock(TestContext())
    overlapped: list[bool] = []

    async def main() -> list[Result]:
        sched = await _started(block)
        make = sched.output_packet

        def slow_output(job: Job, result: OnDataResult) -> AIOSPacket:
            if result.output == {"n": 1}:
                # Outputs of the first batch wait for the second batch's on_batch; before,
                # the second batch could not run until these were made (one run slot).
                overlapped.append(block.second_call.wait(10))
            return make(job, result)

        sched.output_packet = slow_output  # type: ignore[method-assign]
        try:
            loop = asyncio.get_running_loop()
            answers: list[asyncio.Future[Result]] = []
            for k in range(8):  # queued at once: the first batch takes 4, 4 wait
                answers.append(loop.create_future())
                sched.submit_nowait(Job(_packet(k), answers[-1].set_result))
            return list(await asyncio.gather(*answers))
        finally:
            await sched.stop()

    results = asyncio.run(main())
    assert overlapped == [True] * 4
    assert [json.loads(r.output.data)["n"] for r in results if r.output is not None] == [1] * 4 + [2] * 4


def test_a_lone_batch_makes_its_outputs_in_its_own_thread() -> None:
    """Nothing else waiting: no second hand-off for the outputs (it would only add latency)."""
    block = ThreadsBlock(TestContext())
    threads: list[str] = []

    async def main() -> Result:
        sched = await _started(block)
        make = sched.output_packet

        def output(job: Job, result: OnDataResult) -> AIOSPacket:
            threads.append(threading.current_thread().name)
            return make(job, result)

        sched.output_packet = output  # type: ignore[method-assign]
        try:
            return await _answer(sched, _packet(0))
        finally:
            await sched.stop()

    assert asyncio.run(main()).output is not None
    assert len(threads) == 1 and threads[0].startswith("aios-block-batch-0")
