"""output_ptr parsing and the routing policy (pure functions, no server)."""

from __future__ import annotations

import json

import pytest

from aios_grpc.errors import InvalidPacket, PermissionDenied
from aios_grpc.routing import AllowList, Backoff, parse_output_ptr
from aios_grpc.routing.pointer import GRPC, REDIS_LIST, REDIS_STREAM


def ptr(value: object) -> str:
    return json.dumps(value)


@pytest.mark.parametrize("text", ["", "  ", "{}", "null", ptr({"outputs": []})])
def test_empty_pointer_answers_the_caller(text: str) -> None:
    assert parse_output_ptr(text, "a").targets == ()


def test_fan_out_targets_and_transports() -> None:
    plan = parse_output_ptr(
        ptr(
            {
                "outputs": [
                    {"host": "b", "port": 50052, "transport": "grpc", "block_id": "b"},
                    {"host": "r", "port": 6379, "queue_name": "q"},
                    {"host": "r", "port": 6379, "queue_name": "s", "transport": "redis-stream"},
                    {"host": "c.svc:7000", "port": 0},
                    {"host": "d.svc", "port": 0},
                ]
            }
        ),
        "a",
    )
    kinds = [(t.transport, t.address, t.queue_name) for t in plan.targets]
    assert kinds == [
        (GRPC, "b:50052", ""),
        (REDIS_LIST, "r:6379", "q"),  # the original form: a port means a Redis list
        (REDIS_STREAM, "r:6379", "s"),
        (GRPC, "c.svc:7000", ""),  # port 0 is the original's gRPC form
        (GRPC, "d.svc:50051", ""),
    ]
    # Fan-out pointers are not forwarded: the next block answers its sender.
    assert plan.forward_ptr == ""


def test_graph_hop_finds_its_own_entry_and_forwards_the_graph() -> None:
    graph = {
        "is_graph": True,
        "graph": {
            "a": {"outputs": [{"host": "b", "port": 1, "transport": "grpc"}]},
            "b": "final",
            "final": {"outputs": [{"host": "r", "port": 6379, "queue_name": "done"}]},
        },
    }
    text = ptr(graph)
    at_a = parse_output_ptr(text, "a")
    assert [t.address for t in at_a.targets] == ["b:1"] and at_a.forward_ptr == text
    at_b = parse_output_ptr(text, "b")
    assert [t.queue_name for t in at_b.targets] == ["done"]


def test_graph_without_an_entry_for_the_block_is_an_error_not_a_jump_to_final() -> None:
    text = ptr(
        {
            "is_graph": True,
            "graph": {"a": {"outputs": []}, "final": {"outputs": [{"host": "r", "port": 6379, "queue_name": "done"}]}},
        }
    )
    with pytest.raises(InvalidPacket, match="no entry for block 'x'"):
        parse_output_ptr(text, "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ("[1]", "JSON object"),
        (ptr({"outputs": {"host": "b"}}), "must be a list"),
        (ptr({"outputs": [{"port": 1}]}), "has no host"),
        (ptr({"outputs": [{"host": "b", "port": "x"}]}), "not a number"),
        (ptr({"outputs": [{"host": "b", "port": 99999}]}), "out of range"),
        (ptr({"outputs": [{"host": "b", "port": 1, "transport": "carrier-pigeon"}]}), "unknown transport"),
        (ptr({"outputs": [{"host": "r", "port": 6379}]}), "needs a queue_name"),
        (ptr({"is_graph": True, "graph": []}), "graph is not"),
    ],
)
def test_bad_pointers_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidPacket, match=message):
        parse_output_ptr(text, "a")


def test_allow_list_checks_addresses_and_queue_names() -> None:
    allow = AllowList(["127.0.0.1:*", "*.svc:50051"], ["results*"])
    ok = parse_output_ptr(
        ptr(
            {
                "outputs": [
                    {"host": "127.0.0.1", "port": 6379, "queue_name": "results-1"},
                    {"host": "b.svc", "port": 50051, "transport": "grpc"},
                ]
            }
        ),
        "a",
    )
    for target in ok.targets:
        allow.check(target)
    off_host = parse_output_ptr(ptr({"outputs": [{"host": "evil.example", "port": 50051, "transport": "grpc"}]}), "a")
    with pytest.raises(PermissionDenied, match=r"evil\.example:50051"):
        allow.check(off_host.targets[0])
    off_queue = parse_output_ptr(ptr({"outputs": [{"host": "127.0.0.1", "port": 6379, "queue_name": "x"}]}), "a")
    with pytest.raises(PermissionDenied, match="queue 'x'"):
        allow.check(off_queue.targets[0])
    with pytest.raises(PermissionDenied):
        AllowList([]).check(ok.targets[0])  # nothing configured: nothing allowed


def test_backoff_is_capped_exponential_with_jitter() -> None:
    b = Backoff(0.1, 1.0)
    assert [b.delay(n, jitter=False) for n in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    delays = {b.delay(3) for _ in range(50)}
    assert all(0.4 <= d <= 0.8 for d in delays) and len(delays) > 1


def test_a_fan_out_list_is_bounded() -> None:
    from aios_grpc.routing.pointer import MAX_TARGETS

    many = {"outputs": [{"host": "b", "port": 50052, "transport": "grpc"}] * (MAX_TARGETS + 1)}
    with pytest.raises(InvalidPacket, match=f"{MAX_TARGETS + 1} targets, more than {MAX_TARGETS}"):
        parse_output_ptr(ptr(many), "a")
    assert len(parse_output_ptr(ptr({"outputs": many["outputs"][:MAX_TARGETS]}), "a").targets) == MAX_TARGETS
