"""With AIOS_REDIS_URL set, a block's own StateDict and SessionsManager live in Redis by default."""

from __future__ import annotations

import json
from typing import Any

from aios_grpc_client import BlockClient

from aios_grpc import OnDataResult, SessionsManager, StateDict
from aios_grpc.adapters.state_store import MemoryStateStore
from aios_grpc.redis.state import RedisStateStore


class Counting:
    """Counts packets in StateDict("counters") and per session in its own SessionsManager."""

    def __init__(self, context: Any) -> None:
        self.counters = StateDict("counters")
        self.sessions = SessionsManager()

    def on_data(self, entry: Any) -> tuple[bool, Any]:
        self.counters["n"] = self.counters.get("n", 0) + 1
        sid = entry.packet.session_id
        self.sessions.set(sid, "seen", self.sessions.get(sid, "seen", 0) + 1)
        return True, OnDataResult(output={"n": self.counters["n"], "seen": self.sessions.get(sid, "seen")})

    def management(self, action: str, data: Any) -> Any:
        return {"store": type(self.counters._store).__name__, "sessions": type(self.sessions._store).__name__}


def test_state_is_shared_through_redis_by_default(serve: Any, redis_server: Any) -> None:
    settings = {"redis_url": redis_server.url, "block_id": "count"}
    first = serve(Counting, instance_id="a", **settings)
    second = serve(Counting, instance_id="b", **settings)
    with BlockClient(first.address) as a, BlockClient(second.address) as b:
        assert a.management("where") == {"store": "RedisStateStore", "sessions": "RedisStateStore"}
        for _ in range(3):
            assert a.run({}, session_id="s", timeout=30).ok
        last = b.run({}, session_id="s", timeout=30)
    # The second instance saw the first one's counts.
    assert last.data == {"n": 4, "seen": 4}
    raw = redis_server.client().hgetall("aios:state:counters")
    assert {k.decode(): json.loads(v) for k, v in raw.items()} == {"n": 4}
    first.close()
    second.close()
    # Stopped servers give the default back: memory again.
    from aios_grpc.state import default_store

    assert default_store() is None and isinstance(StateDict("x")._store, MemoryStateStore)


def test_without_redis_state_stays_in_memory(serve: Any) -> None:
    served = serve(Counting)
    with BlockClient(served.address) as client:
        assert client.management("where") == {"store": "MemoryStateStore", "sessions": "MemoryStateStore"}
    assert not isinstance(StateDict("y")._store, RedisStateStore)
