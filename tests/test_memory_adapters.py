"""The in-memory adapters (the defaults without Redis) stay bounded in a long-running server."""

from __future__ import annotations

import time

from aios_grpc import BlockEvents, SessionsManager
from aios_grpc.adapters.list_queue import MemoryListQueue
from aios_grpc.adapters.state_store import MemoryStateStore


def test_events_pushed_with_no_consumer_keep_only_the_newest():
    queue = MemoryListQueue(maxlen=100)
    events = BlockEvents(block_id="b", queue=queue)
    for i in range(1000):
        assert events.push_event("seen", {"i": i})
    kept = queue.items("EVENTS_QUEUE")
    assert len(kept) == 100
    assert '"i": 999' in str(kept[-1]) and '"i": 900' in str(kept[0])


def test_the_default_event_queue_is_bounded():
    events = BlockEvents(block_id="b")
    assert isinstance(events.queue, MemoryListQueue)
    for i in range(events.queue.maxlen + 10):
        events.push_event("seen", {"i": i})
    assert len(events.queue.items("EVENTS_QUEUE")) == events.queue.maxlen


def test_expired_sessions_are_dropped_even_when_never_read_again():
    store = MemoryStateStore()
    sessions = SessionsManager(store, default_ttl_s=0.05)
    for i in range(500):
        sessions.set(f"s{i}", "k", i)
    time.sleep(0.1 + store.SWEEP_INTERVAL_S)
    sessions.set("fresh", "k", 1)  # any write sweeps what expired, at most once per interval
    assert store.size() == 1
    assert sessions.list_sessions() == ["fresh"]


def test_a_namespace_emptied_by_deletes_is_dropped():
    store = MemoryStateStore()
    sessions = SessionsManager(store)
    for i in range(50):
        state = sessions.session(f"s{i}")
        state["k"] = 1
        del state["k"]
    assert store.size() == 0
    assert sessions.list_sessions() == []
