"""List ingress: bounded deliveries, dead letters after AIOS_REDIS_MAX_DELIVERIES."""

from __future__ import annotations

import json

from aios_grpc._pb import pb
from aios_grpc.ingress.list import _item_key
from tests.blocks.graph import FlakyBlock, StageBlock
from tests.redis.test_stream_ingress import wait_for


def packet(sid: str, output_ptr: str = "") -> bytes:
    return pb.Packet(session_id=sid, seq_no=1, data="{}", output_ptr=output_ptr).SerializeToString()


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
    client.hset("jobs:deliveries", _item_key(item), 2)
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
