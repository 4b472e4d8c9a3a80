"""List ingress: bounded deliveries, dead letters after AIOS_REDIS_MAX_DELIVERIES."""

from __future__ import annotations

import json
import os
import time

from aios_grpc._pb import pb
from aios_grpc.redis.claims import item_key
from tests.blocks.graph import FlakyBlock, StageBlock
from tests.redis.test_stream_ingress import wait_for


class HangingDataBlock(StageBlock):
    """A ``StageBlock`` whose ``on_data`` never returns when ``HANG_ON_DATA`` is set."""

    def on_data(self, entry):
        if os.environ.get("HANG_ON_DATA"):
            time.sleep(3600)
        return super().on_data(entry)


class StartTimeBlock(StageBlock):
    """A ``StageBlock`` whose outputs say when ``on_data`` started (to see processing order)."""

    def on_data(self, entry):
        started = time.monotonic()
        ok, result = super().on_data(entry)
        result.output["started"] = started
        return ok, result


def packet(sid: str, output_ptr: str = "") -> bytes:
    return pb.Packet(session_id=sid, seq_no=1, data="{}", output_ptr=output_ptr).SerializeToString()


def to_list(port: int, queue: str = "out") -> str:
    """An ``output_ptr`` sending outputs to the Redis list ``queue``."""
    return json.dumps({"outputs": [{"host": "127.0.0.1", "port": port, "queue_name": queue}]})


def sessions_in_processing_order(client, queue: str = "out") -> list[str]:
    """Session ids of the outputs on ``queue``, in the order ``on_data`` started on them."""
    outputs = [pb.Packet.FromString(x) for x in client.lrange(queue, 0, -1)]
    return [p.session_id for p in sorted(outputs, key=lambda p: json.loads(p.data)["started"])]


def test_item_failing_with_a_retryable_error_is_dead_lettered_after_max_deliveries(serve, redis_server) -> None:
    client = redis_server.client()
    # Its only target is down: every delivery ends UNAVAILABLE (retryable) and is requeued.
    down = json.dumps({"outputs": [{"host": "127.0.0.1", "port": 1, "transport": "grpc"}]})
    client.lpush("jobs", packet("doomed", down))
    served = serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_list="jobs",
        redis_max_deliveries=3,
        route_allow=["127.0.0.1:1", f"127.0.0.1:{redis_server.port}"],
        route_allow_queues=["out"],
        route_retry_timeout_s=0.1,
    )
    wait_for(lambda: client.llen("jobs:dead") >= 1, 30, "the dead letter")
    dead = [json.loads(x) for x in client.lrange("jobs:dead", 0, -1)]
    assert len(dead) == 1
    assert "delivered 4 times (AIOS_REDIS_MAX_DELIVERIES=3)" in dead[0]["error"]
    assert pb.Packet.FromString(bytes.fromhex(dead[0]["packet_hex"])).session_id == "doomed"
    mine = f"jobs:processing:{served.server.settings.instance_id}"
    wait_for(lambda: client.llen(mine) == 0, 10, "the processing list to empty")
    assert client.llen("jobs") == 0
    assert client.hlen("jobs:deliveries") == 0  # nothing left behind for a finished item
    # The ingress goes on: a good item after the poisoned one is processed.
    out = json.dumps({"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "out"}]})
    client.lpush("jobs", packet("fine", out))
    wait_for(lambda: client.llen("out") == 1, 10, "the good item")


def test_item_that_succeeds_on_a_later_delivery_is_processed_once_and_its_count_removed(serve, redis_server) -> None:
    client = redis_server.client()
    out = json.dumps({"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "out"}]})
    for i in range(5):
        client.lpush("jobs", packet(f"s{i}", out))
    serve(
        FlakyBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_list="jobs",
        redis_max_deliveries=3,
        block_init_parameters={"fail_times": 2},
        route_allow=[f"127.0.0.1:{redis_server.port}"],
        route_allow_queues=["out"],
    )
    wait_for(lambda: client.llen("out") >= 5, 30, "every item on its third delivery")
    outputs = [pb.Packet.FromString(x) for x in client.lrange("out", 0, -1)]
    assert sorted(p.session_id for p in outputs) == [f"s{i}" for i in range(5)]
    assert {json.loads(p.data)["attempts"] for p in outputs} == {3}
    assert client.llen("jobs:dead") == 0
    wait_for(lambda: client.hlen("jobs:deliveries") == 0, 10, "the counts to be removed")


def test_an_item_that_kills_its_instances_is_dead_lettered(serve, redis_server) -> None:
    client = redis_server.client()
    # A dead instance's leftover, already taken twice (the count survives the instances).
    item = packet("poison")
    client.lpush("jobs:processing:dead-one", item)
    client.hset("jobs:deliveries", item_key(item), 2)
    serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_list="jobs",
        redis_max_deliveries=2,
        redis_claim_idle_s=0.3,
    )
    wait_for(lambda: client.llen("jobs:dead") >= 1, 20, "the dead letter")
    dead = json.loads(client.lindex("jobs:dead", 0))
    assert "delivered 3 times" in dead["error"]
    assert not client.exists("jobs:processing:dead-one") and client.llen("jobs") == 0


def test_a_killed_instance_s_items_are_processed_by_another_in_their_original_order(spawn, serve, redis_server) -> None:
    client = redis_server.client()
    env = {
        "AIOS_BLOCK_ID": "blk",
        "AIOS_REDIS_URL": redis_server.url,
        "AIOS_INSTANCE_ID": "doomed",
        "AIOS_REDIS_INGRESS_LIST": "jobs",
        "AIOS_REDIS_BATCH": "2",  # it takes up to four items at a time
        "AIOS_REDIS_CLAIM_IDLE_S": "0.3",
        # The pointer is checked before on_data runs: allowed here too, so that it hangs there.
        "AIOS_ROUTE_ALLOW": json.dumps([f"127.0.0.1:{redis_server.port}"]),
        "AIOS_ROUTE_ALLOW_QUEUES": '["out"]',
        "HANG_ON_DATA": "1",
    }
    doomed = spawn("tests.redis.test_list_ingress:HangingDataBlock", env=env)
    n = 4
    for i in range(n):
        client.lpush("jobs", packet(f"s{i}", to_list(redis_server.port)))
    wait_for(lambda: client.llen("jobs:processing:doomed") == n, 20, "the doomed instance to take every item")
    doomed.proc.kill()  # SIGKILL with all of them in its processing list
    doomed.proc.wait(10)
    # One worker and a window of two: the survivor processes items in the order it takes them.
    survivor = serve(
        StartTimeBlock,
        block_id="blk",
        workers=1,
        redis_url=redis_server.url,
        redis_ingress_list="jobs",
        redis_batch=1,
        redis_claim_idle_s=0.3,
        route_allow=[f"127.0.0.1:{redis_server.port}"],
        route_allow_queues=["out"],
    )
    wait_for(lambda: client.llen("out") >= n, 30, "every recovered item")
    assert sessions_in_processing_order(client) == [f"s{i}" for i in range(n)]
    assert survivor.server.redis.ingresses[0].recovered == n
    assert not client.exists("jobs:processing:doomed") and client.llen("jobs") == 0
    wait_for(lambda: client.hlen("jobs:deliveries") == 0, 10, "the counts to be removed")


def test_a_list_named_with_glob_characters_recovers_its_own_items_and_no_others(serve, redis_server) -> None:
    client = redis_server.client()
    queue = "in*?[1]"
    out = to_list(redis_server.port)
    # A dead instance's leftovers on this list (newest on the left, as BLMOVE leaves them)...
    client.lpush(f"{queue}:processing:gone", packet("p0", out), packet("p1", out), packet("p2", out))
    # ...and lists that the name, read as a pattern, would match: other queues' processing
    # lists, and the processing list of a queue named like one of this queue's own.
    decoys = ["inXY1:processing:gone", "in*?[1]x:processing:gone", f"{queue}:processing:x:processing:gone"]
    for i, decoy in enumerate(decoys):
        client.lpush(decoy, packet(f"decoy{i}", out))
    served = serve(
        StartTimeBlock,
        block_id="blk",
        workers=1,
        redis_url=redis_server.url,
        redis_ingress_list=queue,
        redis_batch=1,
        redis_claim_idle_s=0.2,
        route_allow=[f"127.0.0.1:{redis_server.port}"],
        route_allow_queues=["out"],
    )
    wait_for(lambda: client.llen("out") >= 3, 20, "the recovered items")
    time.sleep(1.5)  # several more heartbeats: room for a decoy to be taken
    assert sessions_in_processing_order(client) == ["p0", "p1", "p2"]
    assert served.server.redis.ingresses[0].recovered == 3
    assert [client.llen(d) for d in decoys] == [1, 1, 1]
    assert not client.exists(f"{queue}:processing:gone") and client.llen(queue) == 0
