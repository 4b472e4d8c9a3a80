"""Redis-backed SessionsManager, StateDict, BlockEvents and BlockSideCars on a real Redis."""

from __future__ import annotations

import json
import time

import pytest

from aios_grpc import BlockEvents, BlockSideCars, SessionsManager, StateDict
from aios_grpc.context import Context
from aios_grpc.packet import AIOSPacket
from aios_grpc.redis.local import free_port
from aios_grpc.redis.queue import RedisListQueue, sidecar_url
from aios_grpc.redis.state import RedisStateStore
from aios_grpc.settings import Settings


def test_state_dict_round_trips_nested_json_across_instances(redis_server) -> None:
    value = {"a": [1, 2.5, {"b": None, "c": "ü"}], "d": {"e": {"f": True}}}
    one = StateDict("model", RedisStateStore.from_url(redis_server.url))
    one["weights"] = value
    one["n"] = 3
    # A second instance (its own connection) sees the same state.
    two = StateDict("model", RedisStateStore.from_url(redis_server.url))
    assert two["weights"] == value and two.to_dict() == {"weights": value, "n": 3}
    assert sorted(two) == ["n", "weights"] and len(two) == 2
    # Stored as JSON text in a hash, never pickle.
    raw = redis_server.client().hget("aios:state:model", "weights")
    assert json.loads(raw) == value
    del two["n"]
    assert "n" not in one
    with pytest.raises(TypeError, match="JSON-serializable"):
        one["bad"] = object()


def test_sessions_share_state_and_a_session_with_ttl_expires(redis_server) -> None:
    store = RedisStateStore.from_url(redis_server.url, prefix="t")
    sessions = SessionsManager(store)
    sessions.set("keep", "history", [{"turn": 1}])
    sessions.set("short", "x", 1, ttl_s=0.3)
    other = SessionsManager(RedisStateStore.from_url(redis_server.url, prefix="t"))
    assert other.get("keep", "history") == [{"turn": 1}]
    assert sorted(other.list_sessions()) == ["keep", "short"]
    assert redis_server.client().pttl("t:state:session:short") > 0
    deadline = time.monotonic() + 5
    while other.exists("short") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not other.exists("short") and other.get("short", "x", "gone") == "gone"
    assert other.list_sessions() == ["keep"]
    other.delete_session("keep")
    assert sessions.get_session("keep") == {}


def test_default_session_ttl_from_settings(redis_server) -> None:
    ctx = Context.from_settings(Settings(redis_url=redis_server.url, redis_session_ttl_s=0.3, block_id="b"))
    ctx.sessions.set("s", "k", {"v": 1})
    assert ctx.sessions.get("s", "k") == {"v": 1}
    deadline = time.monotonic() + 5
    while ctx.sessions.exists("s") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ctx.sessions.exists("s")


def test_events_go_to_events_queue_in_the_original_shape(redis_server) -> None:
    ctx = Context.from_settings(Settings(redis_url=redis_server.url, block_id="b7"))
    assert ctx.events.push_event("inference_started", {"session_id": "s1"})
    raw = redis_server.client().rpop("EVENTS_QUEUE")
    event = json.loads(raw)
    assert event["event_name"] == "inference_started" and event["block_id"] == "b7"
    assert event["event_data"] == {"session_id": "s1"} and event["ts"] > 0


def test_side_cars_get_packets_on_inputs_and_failures_are_reported(redis_server) -> None:
    ctx = Context.from_settings(
        Settings(
            block_id="b",
            sidecars={
                "features": {"redis_url": redis_server.url},
                "down": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"},
            },
        )
    )
    packet = AIOSPacket(session_id="s1", seq_no=4, data='{"x": 1}')
    assert ctx.side_cars.push_to_sidecar("features", packet)
    from aios_grpc._pb import pb

    assert pb.Packet.FromString(redis_server.client().rpop("INPUTS")).seq_no == 4
    # An unreachable side-car and an unknown name: False and counted, never raised into the block.
    assert ctx.side_cars.push_to_all_sidecars(packet) is False
    assert ctx.side_cars.push_to_sidecar("nope", packet) is False
    assert ctx.side_cars.failures == 2
    assert redis_server.client().llen("INPUTS") == 1  # the reachable one still got it


def test_sidecar_url_follows_the_original_naming() -> None:
    assert sidecar_url("feat", {}, "b1") == "redis://feat-b1-svc.sidecars.svc.cluster.local:6379/0"
    assert sidecar_url("feat", {"external": True, "external_redis_url": "redis://x:1"}, "b1") == "redis://x:1"
    with pytest.raises(ValueError, match="external_redis_url"):
        sidecar_url("feat", {"external": True}, "b1")


def test_without_redis_the_helpers_stay_in_memory() -> None:
    ctx = Context.from_settings(Settings(block_id="b"))
    assert not isinstance(ctx.events.queue, RedisListQueue)
    assert isinstance(ctx.side_cars, BlockSideCars) and ctx.side_cars.queues == {}
    assert isinstance(ctx.events, BlockEvents) and ctx.events.push_event("x")
