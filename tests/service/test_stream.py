"""service/stream.py: one Process stream's window, reader and writer, in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from aios_grpc import OnDataResult
from aios_grpc._pb import pb
from aios_grpc.job import Kind
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.service.servicer import BlockServicer
from aios_grpc.settings import load_settings


class Gated:
    """async on_data that waits for ``gate`` (set by the test) before answering."""

    gate: asyncio.Event

    def __init__(self, context: Any) -> None:
        pass

    async def on_data(self, entry: Any) -> Any:
        await Gated.gate.wait()
        return True, OnDataResult(output={"n": entry.packet.seq_no})


class Context:
    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def _scheduler() -> Scheduler:
    Gated.gate = asyncio.Event()
    scheduler = Scheduler(BlockAdapter(Gated(None)), load_settings())
    await scheduler.configure()
    await scheduler.start()
    return scheduler


async def _until(check: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.001)


def _lone(n: int) -> pb.ProcessRequest:
    return pb.ProcessRequest(packet=pb.Packet(session_id="s", seq_no=n, data="{}"))


async def test_a_full_window_stops_the_reading_until_answers_are_written() -> None:
    scheduler = await _scheduler()
    servicer = BlockServicer(2)
    servicer.attach(scheduler, None)  # type: ignore[arg-type]
    read: list[int] = []

    async def feed() -> AsyncIterator[pb.ProcessRequest]:
        for n in range(1, 6):
            read.append(n)
            yield _lone(n)

    answers: list[tuple[int, int]] = []

    async def serve() -> None:
        async for response in servicer.Process(feed(), Context()):  # type: ignore[arg-type]
            answers.append((response.result.seq_no, response.result.kind))

    serving = asyncio.create_task(serve())
    await _until(lambda: scheduler.in_flight == 2)
    await asyncio.sleep(0.02)
    (stream,) = servicer._streams
    assert scheduler.in_flight == 2 and stream.window.free == 0 and not answers
    Gated.gate.set()
    await serving
    assert answers == [(n, Kind.OK) for n in range(1, 6)]
    assert read == [1, 2, 3, 4, 5]
    assert stream.window.free == 2 and stream.window.waiting == 0
    assert servicer.open_streams == 0 and not servicer._streams
    await scheduler.stop()


async def test_a_caller_gone_midway_ends_the_stream_and_its_reader() -> None:
    scheduler = await _scheduler()
    servicer = BlockServicer(4)
    servicer.attach(scheduler, None)  # type: ignore[arg-type]

    async def feed() -> AsyncIterator[pb.ProcessRequest]:
        for n in range(1, 4):
            yield _lone(n)
        await asyncio.Event().wait()  # the caller keeps its side open

    responses = servicer.Process(feed(), Context())  # type: ignore[arg-type]
    Gated.gate.set()
    first = await responses.__anext__()  # type: ignore[attr-defined]
    assert first.result.seq_no == 1
    (stream,) = servicer._streams
    await responses.aclose()  # type: ignore[attr-defined]
    assert servicer.open_streams == 0 and not servicer._streams
    assert stream.closed
    await _until(lambda: stream.reader is not None and stream.reader.done())
    await scheduler.stop()
