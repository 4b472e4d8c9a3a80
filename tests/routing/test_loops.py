"""Routing that cannot run away: the pointer checked before the block runs, a total fan-out
budget, graphs that lead back to a block, callers that went away."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from aios_grpc import OnDataResult
from aios_grpc._pb import pb, pb_grpc
from aios_grpc.routing.graph import FANOUT_HEADER, HOPS_HEADER, PATH_HEADER
from tests.blocks.graph import StageBlock
from tests.helpers import redis_stream_target, stream_packets, wait_for

ALLOW = ["127.0.0.1:*"]


class RecordingBlock:
    """Records every on_data call (by session id) in ``calls``."""

    calls: list[str] = []

    def __init__(self, context: Any) -> None:
        self.block_id = context.block_id

    def on_data(self, entry: Any) -> Any:
        RecordingBlock.calls.append(entry.packet.session_id)
        return True, OnDataResult(output={"at": self.block_id})


def grpc_target(address: str, block_id: str = "") -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    return {"host": host, "port": int(port), "transport": "grpc", "block_id": block_id}


def terminal(address: str, packets: list[Any], timeout: float = 60) -> list[Any]:
    with BlockClient(address) as client:
        return [r for r in client.process(packets, timeout=timeout) if r.terminal]


@pytest.fixture
def routing_log() -> Iterator[list[str]]:
    """The messages the routing logger writes during the test."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.INFO)
    logger = logging.getLogger("aios_grpc.routing")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_refused_or_malformed_pointer_is_answered_without_running_the_block(serve) -> None:
    RecordingBlock.calls = []
    a = serve(RecordingBlock, block_id="a", route_allow=["127.0.0.1:50051"])
    off_list = {"outputs": [{"host": "10.1.2.3", "port": 50051, "transport": "grpc"}]}
    packets = [
        make_packet({}, session_id="refused", seq_no=1, output_ptr=off_list),
        make_packet({}, session_id="malformed", seq_no=1, output_ptr="{not json"),
        make_packet({}, session_id="bad-host", seq_no=1, output_ptr={"outputs": [{"host": "unix:/x", "port": 1}]}),
        make_packet({}, session_id="plain", seq_no=1),
    ]
    results = {r.session_id: r for r in terminal(a.address, packets)}
    assert results["refused"].error.code == grpc.StatusCode.PERMISSION_DENIED
    assert results["malformed"].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not JSON" in results["malformed"].error.message
    assert results["bad-host"].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert results["plain"].ok
    assert RecordingBlock.calls == ["plain"]  # on_data never saw the refused ones


def test_a_graph_that_leads_back_to_the_block_ends_at_once_logs_and_leaves_no_work(serve, routing_log) -> None:
    RecordingBlock.calls = []
    a = serve(RecordingBlock, block_id="a", route_allow=ALLOW)
    # The case: targets without a block_id (the cycle check by id cannot see them),
    # the block's own address allowed, and a fan-out that doubles at every hop.
    me = grpc_target(a.address)
    graph = {"is_graph": True, "graph": {"a": {"outputs": [me, me]}}}
    results = terminal(a.address, [make_packet({}, session_id="loop", seq_no=1, output_ptr=graph)], timeout=30)
    assert len(results) == 1 and not results[0].ok
    assert results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "led the packet back to block 'a'" in results[0].error.message
    assert len(RecordingBlock.calls) == 1  # the second visit was refused before on_data
    assert any("refused" in line and "led the packet back" in line for line in routing_log)
    wait_for(lambda: a.server.scheduler.in_flight == 0, 10, "nothing left in flight")
    assert a.call(a.server.scheduler.drain(5.0)) == 0  # the drain is not held


def test_the_fan_out_budget_is_shared_by_all_descendants(serve, redis_server) -> None:
    b = serve(StageBlock, block_id="b")
    a = serve(StageBlock, block_id="a", route_allow=ALLOW, route_allow_queues=["out"], route_max_fanout=10)
    two = {"outputs": [grpc_target(b.address), grpc_target(b.address)]}
    one = {"outputs": [redis_stream_target(redis_server.port, "out")]}
    packets = [
        make_packet({}, session_id="spent", seq_no=1, output_ptr=two, headers={FANOUT_HEADER: "1"}),
        make_packet({}, session_id="raised", seq_no=1, output_ptr=one, headers={FANOUT_HEADER: "1000000"}),
        make_packet({}, session_id="fresh", seq_no=1, output_ptr=one),
    ]
    results = {r.session_id: r for r in terminal(a.address, packets)}
    assert results["spent"].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "fan-out budget" in results["spent"].error.message
        and "AIOS_ROUTE_MAX_FANOUT=10" in results["spent"].error.message
    )
    assert b.server.scheduler.completed == 0  # refused before anything was sent
    assert results["raised"].ok and results["fresh"].ok
    forwarded = {p.session_id: p for p in stream_packets(redis_server.client(), "out")}
    # One send spent of this block's 10; a caller's larger header does not raise it.
    assert forwarded["fresh"].headers[FANOUT_HEADER] == "9"
    assert forwarded["raised"].headers[FANOUT_HEADER] == "9"
    assert forwarded["fresh"].headers[HOPS_HEADER] == "1"
    assert PATH_HEADER not in forwarded["fresh"].headers  # a fan-out list does not travel on


def test_a_graph_packet_carries_its_path_and_the_budget_bounds_a_chain(serve, redis_server) -> None:
    c = serve(StageBlock, block_id="c", route_allow=ALLOW, route_allow_queues=["done"])
    b = serve(StageBlock, block_id="b", route_allow=ALLOW)
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    graph = {
        "is_graph": True,
        "graph": {
            "a": {"outputs": [grpc_target(b.address)]},  # no block ids: the path header still sees the way
            "b": {"outputs": [grpc_target(c.address)]},
            "c": {"outputs": [redis_stream_target(redis_server.port, "done")]},
        },
    }
    ok = terminal(a.address, [make_packet({}, session_id="s", seq_no=1, output_ptr=graph)])
    assert ok[0].ok, ok[0].error
    (done,) = stream_packets(redis_server.client(), "done")
    assert json.loads(done.headers[PATH_HEADER]) == ["a", "b", "c"]
    assert done.headers[FANOUT_HEADER] == str(1024 - 3)
    tight = terminal(
        a.address, [make_packet({}, session_id="t", seq_no=1, output_ptr=graph, headers={FANOUT_HEADER: "2"})]
    )
    assert tight[0].error.code == grpc.StatusCode.INVALID_ARGUMENT  # the third hop had no budget left
    assert "fan-out budget" in tight[0].error.message


def test_a_routed_packet_whose_caller_went_away_leaves_the_link(serve, routing_log) -> None:
    b = serve(StageBlock, block_id="b", block_init_parameters={"sleep": 10.0})
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    ptr = json.dumps({"outputs": [grpc_target(b.address)]})
    channel = grpc.insecure_channel(a.address)
    stub = pb_grpc.BlockServiceStub(channel)
    started = threading.Event()

    def requests() -> Iterator[pb.ProcessRequest]:
        yield pb.ProcessRequest(packet=pb.Packet(session_id="gone", seq_no=1, data="{}", output_ptr=ptr))
        started.wait(30)

    call = stub.Process(requests())
    try:
        wait_for(lambda: b.server.scheduler.in_flight == 1, 20, "b to run the routed packet")
        link = a.server.router.grpc_links[b.address]
        assert link.pending == 1
        call.cancel()  # the caller goes away while b still works on its packet
        wait_for(lambda: link.pending == 0, 8, "the packet to leave the link")
        assert b.server.scheduler.in_flight == 1  # before b answered: a stopped on its own
        wait_for(lambda: a.server.scheduler.in_flight == 0, 8, "a to count the packet answered")
        assert any("caller is gone" in line for line in routing_log)
    finally:
        started.set()
        channel.close()


def test_lines_about_refused_packets_are_limited_per_minute(routing_log) -> None:
    from aios_grpc.routing.graph import _LimitedLog

    limited = _LimitedLog(per_minute=3)
    for i in range(10):
        limited.log(logging.WARNING, "packet %s refused", i)
    assert routing_log == ["packet 0 refused", "packet 1 refused", "packet 2 refused"]
    limited._since -= 61  # a minute later
    limited.log(logging.WARNING, "packet %s refused", 10)
    assert routing_log[3:] == [
        "7 more lines about routed packets were left out in the last minute",
        "packet 10 refused",
    ]
