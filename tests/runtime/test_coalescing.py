"""Time-window coalescing in the clients: packets written close together share a request."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

from aios_grpc_client import AsyncBlockClient, BlockClient, make_packet
from aios_grpc_client._types import END, pb, window_requests

from tests.blocks.basic import EchoBlock


def _sizes(requests) -> list[int]:
    return [len(r.packets) if r.packets else 1 for r in requests]


def test_window_groups_what_arrives_within_it():
    q: queue.Queue = queue.Queue()
    for k in range(5):
        q.put(make_packet({"k": k}))
    explicit = pb.ProcessRequest(packet=make_packet({"k": "explicit"}))

    def later() -> None:
        time.sleep(0.3)
        q.put(make_packet({"k": 5}))
        q.put(make_packet({"k": 6}))
        q.put(explicit)
        q.put(make_packet({"k": 7}))
        q.put(END)

    t = threading.Thread(target=later)
    t.start()
    requests = list(window_requests(q, 0, 0.05))
    t.join()
    assert _sizes(requests) == [5, 2, 1, 1]
    assert requests[2] is explicit


def test_window_respects_the_count_limit():
    q: queue.Queue = queue.Queue()
    for k in range(7):
        q.put(make_packet({"k": k}))
    q.put(END)
    assert _sizes(window_requests(q, 3, 10.0)) == [3, 3, 1]


def test_blocking_client_window_end_to_end(serve):
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        results = list(client.process(({"i": i} for i in range(500)), coalesce_window_s=0.002))
        assert [r.data["echo"]["i"] for r in results] == list(range(500))
        stream = client.stream(timeout=30, coalesce_window_s=0.01)
        for i in range(20):
            stream.send(make_packet({"i": i}, session_id="w", seq_no=i))
        stream.close()
        assert [r.seq_no for r in stream.results()] == list(range(20))


def test_a_slow_producer_is_not_held_back_by_the_window(serve):
    served = serve(EchoBlock)
    answered: list[int] = []
    produced_when_answered: list[int] = []
    produced = 0

    def packets():
        nonlocal produced
        for i in range(4):
            # Wait (bounded) for the previous answer: a group that waited for N
            # packets instead of W seconds would never be answered.
            end = time.monotonic() + 10
            while len(answered) < i and time.monotonic() < end:
                time.sleep(0.005)
            produced += 1
            yield {"i": i}

    with BlockClient(served.address) as client:
        for r in client.process(packets(), coalesce=64, coalesce_window_s=0.01, timeout=30):
            answered.append(r.seq_no)
            produced_when_answered.append(produced)
    assert answered == [1, 2, 3, 4]
    assert produced_when_answered == [1, 2, 3, 4]


def test_async_client_window(serve):
    served = serve(EchoBlock)

    async def packets():
        for i in range(40):
            if i % 10 == 0:
                await asyncio.sleep(0.02)
            yield {"i": i}

    async def main() -> tuple[list, list]:
        async with AsyncBlockClient(served.address) as client:
            got = [r async for r in client.process(packets(), coalesce_window_s=0.005)]
            stream = client.stream(timeout=30, coalesce_window_s=0.005)

            async def send() -> None:
                for i in range(15):
                    await stream.send(make_packet({"i": i}, session_id="a", seq_no=i))
                await stream.close()

            sender = asyncio.create_task(send())
            streamed = [r async for r in stream.results()]
            await sender
            return got, streamed

    got, streamed = asyncio.run(main())
    assert [r.data["echo"]["i"] for r in got] == list(range(40))
    assert [r.seq_no for r in streamed] == list(range(15))
