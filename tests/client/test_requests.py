"""The client's request building: the blocking and asyncio paths group packets alike."""

from __future__ import annotations

import asyncio
import queue

from aios_grpc_client import make_packet
from aios_grpc_client._types import (
    END,
    async_requests_of,
    async_to_packets,
    async_window_requests,
    pb,
    requests_of,
    to_packets,
    window_requests,
)


def _shape(requests: list[pb.ProcessRequest]) -> list[list[int]]:
    return [[p.seq_no for p in r.packets] if r.packets else [r.packet.seq_no] for r in requests]


def _items() -> list:
    explicit = pb.ProcessRequest(packets=[make_packet(seq_no=10), make_packet(seq_no=11)])
    return [*(make_packet(seq_no=k) for k in range(5)), explicit, make_packet(seq_no=5), END]


def test_window_grouping_is_the_same_with_and_without_asyncio():
    blocking: queue.Queue = queue.Queue()
    for item in _items():
        blocking.put(item)
    sync = list(window_requests(blocking, 2, 10.0))

    async def collect() -> list[pb.ProcessRequest]:
        source: asyncio.Queue = asyncio.Queue()
        for item in _items():
            source.put_nowait(item)
        return [r async for r in async_window_requests(source, 2, 10.0)]

    expected = [[0, 1], [2, 3], [4], [10, 11], [5]]
    assert _shape(sync) == expected
    assert _shape(asyncio.run(collect())) == expected


def test_values_become_numbered_packets_and_coalesce_alike():
    values = [{"i": i} for i in range(5)] + [make_packet(seq_no=99)]
    sync = list(requests_of(to_packets(values, "s", 1), 2))

    async def source():
        for value in values:
            yield value

    async def collect() -> list[pb.ProcessRequest]:
        return [r async for r in async_requests_of(async_to_packets(source(), "s", 1), 2)]

    expected = [[1, 2], [3, 4], [5, 99]]
    assert _shape(sync) == expected
    assert _shape(asyncio.run(collect())) == expected
    assert _shape(list(requests_of(to_packets([{"a": 1}, {"b": 2}], "s", 7), 0))) == [[7], [8]]
    assert {p.session_id for r in sync for p in r.packets if p.seq_no != 99} == {"s"}
