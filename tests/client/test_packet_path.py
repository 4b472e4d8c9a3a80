"""The client's per-packet path: faster building, the same packets, requests and results."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import OrderedDict

import grpc
import pytest
from aios_grpc_client import AsyncBlockClient, PacketError, Result, make_packet
from aios_grpc_client._types import (
    DEFAULT_COALESCE,
    END,
    async_window_requests,
    json_text,
    packet_requests,
    pb,
    requests_of,
    results_of,
    to_packets,
)

from tests.blocks.basic import EchoBlock

VALUES = [
    {"i": 1, "text": "hello"},
    {"nested": {"list": [1, 2.5, None, True, False]}, "é": "ü\u2603"},
    {1: "int key", 2.5: "float key", None: "null key", False: "bool key"},
    [float("nan"), float("inf"), -float("inf"), 1e300, -0.0],
    OrderedDict([("b", 1), ("a", 2)]),
    (1, 2, 3),
    "a string",
    42,
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_json_text_is_json_dumps(value):
    assert json_text(value) == json.dumps(value)


def _error_of(call, value) -> tuple[type, str]:
    with pytest.raises(Exception) as caught:
        call(value)
    return caught.type, str(caught.value)


def test_json_text_raises_what_json_dumps_raises():
    circular: dict = {"a": 1}
    circular["self"] = circular
    for bad in ({"s": {1, 2}}, circular, {(1, 2): "tuple key"}, [object()]):
        assert _error_of(json_text, bad) == _error_of(json.dumps, bad)
    # A failed call leaves nothing behind: the same objects encode afterwards.
    del circular["self"]
    assert json_text(circular) == '{"a": 1}'


def test_make_packet_is_the_packet_of_every_field():
    full = make_packet(
        {"a": 1}, session_id="s", seq_no=7, files=[({"n": 1}, b"x"), ("raw", b"y")],
        output_ptr={"outputs": []}, headers={"h": "v"}, deadline=12.5, ts=3.25,
    )  # fmt: skip
    expected = pb.Packet(
        session_id="s", seq_no=7, data='{"a": 1}', output_ptr='{"outputs": []}', deadline=12.5, ts=3.25,
        files=[pb.FileInfo(metadata='{"n": 1}', file_data=b"x"), pb.FileInfo(metadata="raw", file_data=b"y")],
        headers={"h": "v"},
    )  # fmt: skip
    assert full == expected
    assert make_packet() == pb.Packet(data="{}")
    assert make_packet("raw text", output_ptr="ptr").output_ptr == "ptr"
    # An empty mapping is still a pointer the caller gave, sent as "{}".
    assert make_packet(output_ptr={}).output_ptr == "{}"


def _items() -> list:
    return [{"i": 0}, "text as is", None, make_packet({"own": True}, session_id="x", seq_no=99), {"i": 4}]


@pytest.mark.parametrize("coalesce", [0, 1, 2, 3, 64])
def test_packet_requests_are_what_requests_of_builds(coalesce):
    built = list(packet_requests(_items(), "s", 10, coalesce))
    assert built == list(requests_of(to_packets(_items(), "s", 10), coalesce))
    packets = [p for r in built for p in (r.packets or [r.packet])]
    assert [(p.session_id, p.seq_no, p.data) for p in packets] == [
        ("s", 10, '{"i": 0}'),
        ("s", 11, "text as is"),
        ("s", 12, "{}"),
        ("x", 99, '{"own": true}'),
        ("s", 14, '{"i": 4}'),
    ]


def test_packet_requests_window_ends_a_request_once_an_item_comes_late():
    def slow():
        for i in range(6):
            if i == 3:
                time.sleep(0.05)
            yield {"i": i}

    sizes = [len(r.packets) for r in packet_requests(slow(), "s", 1, 0, window_s=0.02)]
    assert sizes == [3, 3]
    assert [len(r.packets) for r in packet_requests(slow(), "s", 1, 2, window_s=10.0)] == [2, 2, 2]


def test_packet_requests_window_alone_takes_at_most_the_default_count():
    sizes = [len(r.packets) for r in packet_requests(range(DEFAULT_COALESCE + 5), "s", 1, 0, window_s=10.0)]
    assert sizes == [DEFAULT_COALESCE, 5]


def test_async_window_ends_on_time_and_keeps_the_tail_after_its_packets():
    explicit = pb.ProcessRequest(packet=make_packet(seq_no=50))

    async def collect() -> list[list[int]]:
        source: asyncio.Queue = asyncio.Queue()

        async def later() -> None:
            for k in range(3):
                source.put_nowait(make_packet(seq_no=k))
            await asyncio.sleep(0.1)
            for item in (make_packet(seq_no=3), explicit, make_packet(seq_no=4), END):
                source.put_nowait(item)

        producer = asyncio.create_task(later())
        out = [[p.seq_no for p in r.packets] or [r.packet.seq_no] async for r in async_window_requests(source, 0, 0.02)]
        await producer
        return out

    assert asyncio.run(collect()) == [[0, 1, 2], [3], [50], [4]]


def test_results_are_ordinary_frozen_results():
    ok = pb.PacketResult(session_id="s", seq_no=3, kind=pb.RESULT_KIND_OK, output=make_packet({"v": 1}))
    late = pb.PacketError(code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0], message="late", retryable=True, stage="run")
    failed = pb.PacketResult(session_id="s", seq_no=4, kind=pb.RESULT_KIND_ERROR, error=late)
    odd = pb.PacketResult(session_id="s", seq_no=5, kind=2, error=pb.PacketError(code=999, message="?"))
    first = pb.PacketResult(session_id="s", seq_no=2, kind=pb.RESULT_KIND_PARTIAL)
    results = results_of(pb.ProcessResponse(result=first, results=[ok, failed, odd]))
    assert results == [
        Result("s", 2, "partial", None, None),
        Result("s", 3, "ok", make_packet({"v": 1}), None),
        Result("s", 4, "error", None, PacketError(grpc.StatusCode.DEADLINE_EXCEEDED, "late", True, "run")),
        Result("s", 5, "error", None, PacketError(grpc.StatusCode.UNKNOWN, "?", False, "")),
    ]
    assert results[1].data == {"v": 1} and results[1].ok and not results[0].terminal
    assert hash(results[0]) == hash(Result("s", 2, "partial", None, None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        results[1].kind = "error"  # type: ignore[misc]


def test_async_client_window_over_a_plain_iterable(serve):
    served = serve(EchoBlock)

    async def main() -> list[Result]:
        async with AsyncBlockClient(served.address) as client:
            values = ({"i": i} for i in range(600))
            return [r async for r in client.process(values, session_id="p", coalesce_window_s=0.002, timeout=30)]

    results = asyncio.run(main())
    assert [r.seq_no for r in results] == list(range(1, 601))
    assert [r.data["echo"]["i"] for r in results] == list(range(600))


def test_results_of_builds_what_from_proto_builds():
    fault = pb.PacketError(code=grpc.StatusCode.UNAVAILABLE.value[0], message="later", retryable=True, stage="x")
    messages = [
        pb.PacketResult(session_id="s", seq_no=n, kind=kind, **extra)
        for n, (kind, extra) in enumerate(
            [
                (pb.RESULT_KIND_OK, {"output": make_packet({"v": 1})}),
                (pb.RESULT_KIND_OK, {}),
                (pb.RESULT_KIND_ERROR, {"error": fault}),
                (pb.RESULT_KIND_ERROR, {}),
                (pb.RESULT_KIND_PARTIAL, {"output": make_packet("tok")}),
                (pb.RESULT_KIND_UNSPECIFIED, {"error": fault}),
                (7, {}),
            ]
        )
    ]
    results = results_of(pb.ProcessResponse(results=messages))
    assert results == [Result.from_proto(m) for m in messages]
    assert [r.kind for r in results] == ["ok", "ok", "error", "error", "partial", "unspecified", "unspecified"]
    assert results[2].error == PacketError(grpc.StatusCode.UNAVAILABLE, "later", True, "x")
    assert results[5].error is not None and results[3].error is None
    # The contract sets error only on error results: an ok result's error is not read.
    odd = pb.PacketResult(kind=pb.RESULT_KIND_OK, error=fault)
    assert results_of(pb.ProcessResponse(results=[odd]))[0].error is None
