"""Routing by output_ptr between real in-process servers, to gRPC blocks and Redis queues."""

from __future__ import annotations

import json
import time

import grpc
from aios_grpc_client import BlockClient, make_packet

from aios_grpc._pb import pb
from aios_grpc.redis.local import free_port
from tests.blocks.graph import StageBlock

ALLOW = ["127.0.0.1:*"]


def grpc_target(address: str, block_id: str = "") -> dict[str, object]:
    host, port = address.rsplit(":", 1)
    return {"host": host, "port": int(port), "transport": "grpc", "block_id": block_id}


def run_one(address: str, data: object, output_ptr: object, session_id: str = "s1") -> object:
    with BlockClient(address) as client:
        packet = make_packet(data, session_id=session_id, seq_no=1, output_ptr=output_ptr)
        results = [r for r in client.process([packet], timeout=60) if r.terminal]
    assert len(results) == 1
    return results[0]


def test_fan_out_to_grpc_blocks_answers_after_both_answered(serve) -> None:
    b = serve(StageBlock, block_id="b")
    c = serve(StageBlock, block_id="c")
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    result = run_one(a.address, {"x": 1}, {"outputs": [grpc_target(b.address), grpc_target(c.address)]})
    assert result.ok
    # Each downstream answered its sender (block a) with its output; a passes them back.
    # Several outputs come as partials before the terminal result, so ask again with one target.
    single = run_one(a.address, {"x": 2}, {"outputs": [grpc_target(b.address)]})
    assert single.ok and single.data["path"] == ["a", "b"]
    # One long-lived stream per target, reused by both packets.
    link = a.server.router.grpc_links[b.address]
    assert link.streams_opened == 1


def test_graph_pointer_travels_hop_by_hop(serve, redis_server) -> None:
    c = serve(StageBlock, block_id="c", route_allow=ALLOW, route_allow_queues=["done"])
    b = serve(StageBlock, block_id="b", route_allow=ALLOW)
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    graph = {
        "is_graph": True,
        "graph": {
            "a": {"outputs": [grpc_target(b.address, "b")]},
            "b": {"outputs": [grpc_target(c.address, "c")]},
            "c": "final",
            "final": {
                "outputs": [
                    {"host": "127.0.0.1", "port": redis_server.port, "queue_name": "done", "transport": "redis-stream"}
                ]
            },
        },
    }
    assert run_one(a.address, {"x": 1}, graph).ok
    entries = redis_server.client().xrange("done")
    assert len(entries) == 1
    packet = pb.Packet.FromString(entries[0][1][b"packet"])
    assert json.loads(packet.data)["path"] == ["a", "b", "c"] and packet.session_id == "s1"


def test_graph_missing_entry_is_invalid_argument(serve) -> None:
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    graph = {"is_graph": True, "graph": {"other": {"outputs": []}, "final": {"outputs": []}}}
    result = run_one(a.address, {}, graph)
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no entry for block 'a'" in result.error.message


def test_target_off_the_allow_list_is_refused(serve, redis_server) -> None:
    b = serve(StageBlock, block_id="b")
    a = serve(StageBlock, block_id="a", route_allow=[f"127.0.0.1:{redis_server.port}"], route_allow_queues=["results"])
    off_host = run_one(a.address, {}, {"outputs": [grpc_target(b.address)]})
    assert off_host.error.code == grpc.StatusCode.PERMISSION_DENIED
    assert b.address in off_host.error.message
    off_queue = run_one(
        a.address, {}, {"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "elsewhere"}]}
    )
    assert off_queue.error.code == grpc.StatusCode.PERMISSION_DENIED
    assert redis_server.client().llen("elsewhere") == 0
    # The block still serves everything else.
    assert run_one(a.address, {}, "").ok


def test_down_target_gives_unavailable_after_bounded_retries(serve) -> None:
    a = serve(
        StageBlock,
        block_id="a",
        route_allow=ALLOW,
        route_retry_timeout_s=1.0,
        route_backoff_initial_s=0.05,
        route_backoff_max_s=0.2,
    )
    dead = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run_one(a.address, {}, {"outputs": [grpc_target(dead)]})
    took = time.monotonic() - start
    assert result.error.code == grpc.StatusCode.UNAVAILABLE and result.error.retryable
    assert dead in result.error.message and "attempts" in result.error.message
    assert took < 30  # bounded, not forever
    link = a.server.router.grpc_links[dead]
    assert link.streams_opened >= 2  # it did retry
    # Health and other packets were not blocked meanwhile.
    assert run_one(a.address, {"y": 1}, "").ok


def test_redis_list_target_gets_protobuf_packets_and_down_redis_is_unavailable(serve, redis_server) -> None:
    a = serve(
        StageBlock, block_id="a", route_allow=ALLOW, route_allow_queues=["out", "a-string"], route_retry_timeout_s=1.0
    )
    target = {"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "out"}]}
    assert run_one(a.address, {"v": 1}, target).ok
    raw = redis_server.client().rpop("out")
    packet = pb.Packet.FromString(raw)
    assert json.loads(packet.data)["path"] == ["a"] and packet.output_ptr == ""
    redis_server.client().set("a-string", "x")
    wrong = {"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "a-string"}]}
    refused = run_one(a.address, {"v": 3}, wrong)
    assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT and "WRONGTYPE" in refused.error.message
    down = {"outputs": [{"host": "127.0.0.1", "port": free_port(), "queue_name": "out"}]}
    result = run_one(a.address, {"v": 2}, down)
    assert result.error.code == grpc.StatusCode.UNAVAILABLE and "attempts" in result.error.message


def test_streamed_outputs_of_a_routed_packet_go_downstream_before_its_answer(serve, redis_server) -> None:
    from tests.blocks.basic import StreamingBlock

    a = serve(StreamingBlock, block_id="a", route_allow=ALLOW, route_allow_queues=["tokens"])
    target = {"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "tokens"}]}
    with BlockClient(a.address) as client:
        packet = make_packet({"text": "one two three"}, session_id="s", seq_no=1, output_ptr=target)
        results = list(client.process([packet], timeout=60))
    # The caller gets only the terminal OK, sent once every token reached the target.
    assert [r.kind for r in results] == ["ok"]
    tokens = [json.loads(pb.Packet.FromString(x).data)["token"] for x in redis_server.client().lrange("tokens", 0, -1)]
    assert list(reversed(tokens)) == ["one", "two", "three"]  # LPUSH: newest first


def test_retryable_answer_from_downstream_is_sent_again_within_the_bound(serve) -> None:
    from tests.blocks.graph import FlakyBlock

    b = serve(FlakyBlock, block_id="b", block_init_parameters={"fail_times": 2})
    a = serve(StageBlock, block_id="a", route_allow=ALLOW, route_backoff_initial_s=0.01)
    result = run_one(a.address, {}, {"outputs": [grpc_target(b.address)]})
    assert result.ok and result.data == {"attempts": 3}
    # Past the retry time the downstream's own UNAVAILABLE is passed on, not swallowed.
    slow = serve(FlakyBlock, block_id="b2", block_init_parameters={"fail_times": 10**6})
    a2 = serve(StageBlock, block_id="a2", route_allow=ALLOW, route_retry_timeout_s=0.5, route_backoff_max_s=0.1)
    failed = run_one(a2.address, {}, {"outputs": [grpc_target(slow.address)]})
    assert failed.error.code == grpc.StatusCode.UNAVAILABLE and "warming up" in failed.error.message


def test_a_graph_with_a_cycle_is_refused_at_the_first_hop(serve) -> None:
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    b = serve(StageBlock, block_id="b", route_allow=ALLOW)
    c = serve(StageBlock, block_id="c", route_allow=ALLOW)
    cycle = {
        "is_graph": True,
        "graph": {
            "a": {"outputs": [grpc_target(b.address, "b")]},
            "b": {"outputs": [grpc_target(c.address, "c")]},
            "c": {"outputs": [grpc_target(a.address, "a")]},
        },
    }
    result = run_one(a.address, {"x": 1}, cycle)
    assert not result.ok
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "graph has a cycle: a -> b -> c -> a" in result.error.message
    assert c.server.scheduler.completed == 0  # refused before anything was sent


def test_a_packet_past_the_hop_limit_is_refused(serve) -> None:
    from aios_grpc.routing.graph import HOPS_HEADER, MAX_HOPS

    b = serve(StageBlock, block_id="b")
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    ptr = {"outputs": [grpc_target(b.address)]}
    with BlockClient(a.address) as client:
        tired = make_packet({"x": 1}, session_id="s", seq_no=1, output_ptr=ptr, headers={HOPS_HEADER: str(MAX_HOPS)})
        fresh = make_packet({"x": 1}, session_id="s", seq_no=2, output_ptr=ptr, headers={HOPS_HEADER: "3"})
        results = [r for r in client.process([tired, fresh], timeout=30) if r.terminal]
    assert not results[0].ok and results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"more than {MAX_HOPS} hops" in results[0].error.message
    assert results[1].ok, results[1].error


def test_a_routed_packet_whose_deadline_passes_downstream_is_answered_and_leaves_the_link(serve) -> None:
    b = serve(StageBlock, block_id="b", block_init_parameters={"sleep": 1.0})
    a = serve(StageBlock, block_id="a", route_allow=ALLOW)
    ptr = {"outputs": [grpc_target(b.address)]}
    with BlockClient(a.address) as client:
        late = make_packet({"tag": "late"}, session_id="s", seq_no=1, output_ptr=ptr, deadline=time.time() + 0.3)
        results = [r for r in client.process([late], timeout=30) if r.terminal]
    # Answered at its deadline, while b still works on it (b would answer OK).
    assert [r.error.code for r in results] == [grpc.StatusCode.DEADLINE_EXCEEDED], results
    assert results[0].error.retryable and "answered" in results[0].error.message
    link = a.server.router.grpc_links[b.address]
    assert link.pending == 0
    # The same key again: b answers the late packet first; a ignores that answer and
    # gives this packet its own.
    again = run_one(a.address, {"tag": "again"}, ptr, session_id="s")
    assert again.ok and again.data["tag"] == "again" and again.data["path"] == ["a", "b"]
    assert link.pending == 0 and link.streams_opened == 1
