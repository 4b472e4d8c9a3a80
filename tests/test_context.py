"""Context and its in-memory helpers: SessionsManager/StateDict, AIOSMetrics, BlockEvents."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest

from aios_grpc import *
from aios_grpc.adapters.list_queue import MemoryListQueue
from aios_grpc.events import BlockSideCars


def test_context_has_the_fields_design_md_lists():
    names = {f.name for f in dataclasses.fields(Context)}
    assert names >= {
        "block_id", "instance_id", "block_data", "block_init_data", "block_init_settings",
        "block_init_parameters", "allocation_info", "metrics", "sessions", "events", "side_cars", "logger",
    }  # fmt: skip
    ctx = Context()
    assert set(ctx.allocation_info) == {"gpus", "node_id", "cluster_id"}
    assert isinstance(ctx.metrics, AIOSMetrics) and isinstance(ctx.sessions, SessionsManager)
    assert isinstance(ctx.events, BlockEvents) and isinstance(ctx.side_cars, BlockSideCars)
    assert isinstance(ctx.logger, logging.Logger)


def test_contexts_do_not_share_helpers():
    a, b = TestContext(), TestContext()
    a.sessions.set("s", "k", 1)
    a.block_init_parameters["x"] = 1
    assert b.sessions.get("s", "k") is None and b.block_init_parameters == {}


def test_the_server_gives_the_block_a_context_from_settings(serve):
    seen: dict = {}

    class Probe:
        def __init__(self, context):
            seen["ctx"] = context

        def on_data(self, entry):
            return True, OnDataResult(output={})

    serve(Probe, block_id="b7", instance_id="b7-0", block_init_parameters={"t": 1}, gpus=["0"], node_id="n1")
    ctx = seen["ctx"]
    assert isinstance(ctx, Context)
    assert (ctx.block_id, ctx.instance_id, ctx.block_init_parameters) == ("b7", "b7-0", {"t": 1})
    assert ctx.allocation_info == {"gpus": ["0"], "node_id": "n1", "cluster_id": ""}


# -- sessions and state -----------------------------------------------------------------


def test_sessions_manager_keeps_json_values_per_session():
    sessions = SessionsManager()
    sessions.set("s1", "count", 1)
    sessions.set("s1", "boxes", [{"x": 1}])
    sessions.set("s2", "count", 5)
    assert sessions.get("s1", "count") == 1 and sessions.get("s2", "count") == 5
    assert sessions.get("s1", "missing", "default") == "default"
    assert sessions.get_session("s1") == {"count": 1, "boxes": [{"x": 1}]}
    assert sorted(sessions.list_sessions()) == ["s1", "s2"]
    # Reads are copies: a change counts only once it is stored back.
    boxes = sessions.get("s1", "boxes")
    boxes.append({"x": 2})
    assert sessions.get("s1", "boxes") == [{"x": 1}]
    sessions.delete_session("s1")
    assert not sessions.exists("s1") and sessions.exists("s2")
    sessions.clear()
    assert sessions.list_sessions() == []


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", {"f": lambda: 1}])
def test_state_rejects_values_that_are_not_json(value):
    sessions = SessionsManager()
    with pytest.raises(TypeError, match="state values must be JSON-serializable"):
        sessions.set("s", "k", value)
    state = StateDict("d")
    with pytest.raises(TypeError, match="JSON-serializable"):
        state["k"] = value
    assert "k" not in state


def test_state_dict_is_a_mutable_mapping():
    state = StateDict("counters")
    state["a"] = 1
    state.update({"b": [1, 2], "c": {"d": None}})
    assert dict(state) == {"a": 1, "b": [1, 2], "c": {"d": None}} == state.to_dict()
    assert len(state) == 3 and "b" in state
    del state["a"]
    with pytest.raises(KeyError):
        del state["a"]
    with pytest.raises(KeyError):
        state["a"]
    assert state.get("a", 0) == 0
    state.clear()
    assert len(state) == 0


def test_session_ttl_expires_after_the_last_write():
    sessions = SessionsManager(default_ttl_s=0.2)
    sessions.set("s", "k", 1)
    time.sleep(0.12)
    sessions.set("s", "k", 2)  # refreshes the TTL
    time.sleep(0.12)
    assert sessions.get("s", "k") == 2
    time.sleep(0.2)
    assert sessions.get("s", "k") is None and not sessions.exists("s")
    short = SessionsManager()
    short.set("t", "k", 1, ttl_s=0.05)
    short.set("u", "k", 1)
    time.sleep(0.1)
    assert short.list_sessions() == ["u"]


# -- metrics ------------------------------------------------------------------------------


def test_metrics_with_the_seeds_method_names():
    m = AIOSMetrics()
    m.register_counter("images_processed_total", "Total number of images processed")
    m.register_counter("detections_total", "Detections", ["camera"])
    m.register_gauge("input_queue_length", "Jobs queued")
    m.register_histogram("objects_per_image", "Detections per image", buckets=[0, 1, 2, 3, 5, 10, 20])
    m.increment_counter("images_processed_total")
    m.increment_counter("images_processed_total", amount=2)
    m.increment_counter("detections_total", labels={"camera": "front"})
    m.set_gauge("input_queue_length", 7)
    m.set_gauge("input_queue_length", 3)
    for n in (0, 2, 2, 30):
        m.observe_histogram("objects_per_image", n)
    assert m.value("images_processed_total") == 3.0
    assert m.value("detections_total", {"camera": "front"}) == 1.0
    assert m.value("input_queue_length") == 3.0
    counts, total, n = m.value("objects_per_image")
    assert (total, n) == (34, 4) and sum(counts) == 4 and counts[-1] == 1
    assert sorted(spec.name for spec in m.registered()) == [
        "detections_total", "images_processed_total", "input_queue_length", "objects_per_image",
    ]  # fmt: skip
    # Registering the same metric again is harmless.
    m.register_counter("images_processed_total", "Total number of images processed")


def test_metric_mistakes_are_clear_errors():
    m = AIOSMetrics()
    m.register_counter("hits_total", "Hits", ["route"])
    with pytest.raises(ValueError, match=r"metric 'nope' is not registered \(registered: hits_total\)"):
        m.increment_counter("nope")
    with pytest.raises(ValueError, match=r"metric 'hits_total' takes labels \['route'\], got \[\]"):
        m.increment_counter("hits_total")
    with pytest.raises(ValueError, match=r"takes labels \['route'\], got \['path'\]"):
        m.increment_counter("hits_total", labels={"path": "/"})
    with pytest.raises(ValueError, match="metric 'hits_total' is a counter, not a gauge"):
        m.set_gauge("hits_total", 1, labels={"route": "a"})
    with pytest.raises(ValueError, match="already registered as a counter"):
        m.register_gauge("hits_total", "Hits")
    with pytest.raises(ValueError, match="can only go up"):
        m.increment_counter("hits_total", labels={"route": "a"}, amount=-1)
    with pytest.raises(ValueError, match="invalid metric name '1bad'"):
        m.register_counter("1bad", "x")
    with pytest.raises(ValueError, match="invalid metric name 'has space'"):
        m.register_gauge("has space", "x")


# -- events and side-cars -----------------------------------------------------------------


def test_block_events_push_json_to_the_events_queue():
    queue = MemoryListQueue()
    events = BlockEvents(block_id="b1", queue=queue)
    assert events.push_event("inference_started", {"session_id": "s1"}) is True
    assert events.push_event("done") is True
    pushed = [json.loads(item) for item in queue.items("EVENTS_QUEUE")]
    assert [(e["event_name"], e["block_id"], e["event_data"]) for e in pushed] == [
        ("inference_started", "b1", {"session_id": "s1"}),
        ("done", "b1", {}),
    ]
    assert all(isinstance(e["ts"], float) for e in pushed)


def test_a_failing_event_push_returns_false_and_does_not_raise():
    class Broken(MemoryListQueue):
        def push(self, name, item):
            raise ConnectionError("redis down")

    assert BlockEvents(block_id="b", queue=Broken()).push_event("x", {}) is False


def test_side_cars_get_serialized_messages():
    queue = MemoryListQueue()
    side_cars = BlockSideCars({"logger": queue})
    packet = AIOSPacket(session_id="s", seq_no=1, data="{}")
    assert side_cars.push_to_sidecar("logger", packet) is True
    assert side_cars.push_to_sidecar("unknown", packet) is False
    assert side_cars.push_to_all_sidecars(packet) is True
    assert queue.items("INPUTS") == [packet.SerializeToString()] * 2
    assert side_cars.failures == 1
