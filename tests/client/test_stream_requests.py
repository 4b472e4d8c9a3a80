"""An open asyncio stream writes the requests that a ProcessRequest of the same packets would serialize."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aios_grpc_client import AsyncProcessStream, make_packet
from aios_grpc_client._types import PACKET_TAG, PACKETS_TAG, pb, request_head


class _Call:
    def done(self) -> bool:
        return False

    def cancel(self) -> bool:
        return True


class _Stub:
    """Stands in for the channel: keeps the stream's request iterator."""

    def __init__(self) -> None:
        self.requests: Any = None

    def Process(self, requests: Any, timeout: float | None, metadata: Any) -> _Call:
        self.requests = requests
        return _Call()


def _open(**options: Any) -> tuple[AsyncProcessStream, _Stub]:
    stub = _Stub()
    return AsyncProcessStream(stub, (), None, **options), stub


async def _written(stub: _Stub) -> list[bytes]:
    return [request async for request in stub.requests]


def _seq(raw: bytes) -> list[int]:
    request = pb.ProcessRequest.FromString(raw)
    return [p.seq_no for p in request.packets] if request.packets else [request.packet.seq_no]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 1_000, 16_383, 16_384, 70_000, 2_097_151, 2_097_152])
def test_request_head_is_what_protobuf_writes(size):
    packet = pb.Packet(data="x" * size)
    body = packet.SerializeToString()
    assert request_head(PACKETS_TAG, len(body)) + body == pb.ProcessRequest(packets=[packet]).SerializeToString()
    assert request_head(PACKET_TAG, len(body)) + body == pb.ProcessRequest(packet=packet).SerializeToString()
    # Lengths past any packet built here: protobuf's varint of the same number.
    for big in (size << 16, size << 28) if size else ():
        assert request_head(PACKETS_TAG, big) == b"\x12" + pb.Packet(seq_no=big).SerializeToString()[1:]


def test_window_requests_are_the_serialized_requests_of_their_packets():
    sent = [make_packet({"k": k}, session_id="s", seq_no=k, files=[({"n": k}, bytes(k * 100))]) for k in range(5)]
    tail = [make_packet(seq_no=50), make_packet(seq_no=51)]

    async def run() -> list[bytes]:
        stream, stub = _open(coalesce=3, coalesce_window_s=10.0)
        for packet in sent[:4]:
            await stream.send(packet)
        await stream.send(tail)  # ends the open window, then goes as given
        await stream.send(sent[4])
        await stream.close()  # ends the open window at once
        return await _written(stub)

    written = asyncio.run(run())
    assert (
        written
        == [
            pb.ProcessRequest(packets=sent[:3]).SerializeToString(),  # the count limit
            pb.ProcessRequest(packets=sent[3:4]).SerializeToString(),
            pb.ProcessRequest(packets=tail).SerializeToString(),
            pb.ProcessRequest(packets=sent[4:]).SerializeToString(),
        ]
    )


def test_without_a_window_each_packet_is_its_own_request_in_the_packet_field():
    sent = [make_packet({"k": k}, session_id="s", seq_no=k) for k in range(3)]

    async def run() -> list[bytes]:
        stream, stub = _open(coalesce=8)  # a count alone does not group an open stream's packets
        for packet in sent:
            await stream.send(packet)
        await stream.close()
        return await _written(stub)

    assert asyncio.run(run()) == [pb.ProcessRequest(packet=p).SerializeToString() for p in sent]


def test_the_window_ends_on_time_and_a_busy_writer_gets_one_request():
    async def run() -> tuple[list[list[int]], float]:
        stream, stub = _open(coalesce_window_s=0.02)
        for k in range(3):
            await stream.send(make_packet(seq_no=k))
        start = time.monotonic()
        first = await stub.requests.__anext__()  # written once the window is over
        waited = time.monotonic() - start
        # While gRPC writes (here: nobody reads), two windows go by: they go as one request.
        await stream.send(make_packet(seq_no=3))
        await asyncio.sleep(0.05)
        await stream.send(make_packet(seq_no=4))
        await asyncio.sleep(0.05)
        await stream.close()
        return [_seq(first)] + [_seq(r) for r in await _written(stub)], waited

    shapes, waited = asyncio.run(run())
    assert shapes == [[0, 1, 2], [3, 4]]
    assert 0.01 < waited < 1.0


def test_a_packet_is_sent_as_it_was_when_sent_and_other_types_fail_at_send():
    async def run() -> list[bytes]:
        stream, stub = _open(coalesce_window_s=10.0)
        packet = make_packet({"v": 1}, seq_no=1)
        await stream.send(packet)
        packet.data = '{"v": 2}'
        await stream.send({"seq_no": 2, "data": "{}"})  # what a ProcessRequest takes, it takes
        with pytest.raises(TypeError, match="Packet"):
            await stream.send(5)  # type: ignore[arg-type]
        await stream.close()
        with pytest.raises(RuntimeError, match="closed"):
            await stream.send(packet)
        return await _written(stub)

    (only,) = asyncio.run(run())
    assert [(p.seq_no, p.data) for p in pb.ProcessRequest.FromString(only).packets] == [(1, '{"v": 1}'), (2, "{}")]


def test_send_waits_for_room_and_the_writer_makes_it():
    async def run() -> list[list[int]]:
        stream, stub = _open(max_pending=2)
        await stream.send(make_packet(seq_no=1))
        await stream.send(make_packet(seq_no=2))
        third = asyncio.create_task(stream.send(make_packet(seq_no=3)))
        await asyncio.sleep(0.05)
        assert not third.done() and stream._pending == 2
        first = await stub.requests.__anext__()  # gRPC takes one: room for the third
        await asyncio.wait_for(third, 1.0)
        await stream.close()
        return [_seq(first)] + [_seq(r) for r in await _written(stub)]

    assert asyncio.run(run()) == [[1], [2], [3]]
