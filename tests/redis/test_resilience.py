"""Redis restarts under a running block; list ingress; parameter broadcast between instances."""

from __future__ import annotations

import json
import time

from aios_grpc_client import BlockClient

from aios_grpc._pb import pb
from tests.blocks.graph import StageBlock
from tests.helpers import add_packets, pending, result_sessions, wait_for


def test_redis_restart_mid_run_loses_nothing(serve, redis_server) -> None:
    serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_stream="jobs",
        redis_results_stream="results",
        redis_batch=20,
        redis_claim_idle_s=2.0,
        block_init_parameters={"sleep": 0.002},
    )
    client = redis_server.client()
    add_packets(client, "jobs", 200, prefix="before")
    wait_for(lambda: client.xlen("results") >= 20, 30, "processing to start")
    redis_server.restart(down_s=1.0)  # entries are in flight, acks are on their way
    client = redis_server.client()
    add_packets(client, "jobs", 200, prefix="after")
    expected = {f"before{i}" for i in range(200)} | {f"after{i}" for i in range(200)}
    wait_for(lambda: expected <= set(result_sessions(client, "results")), 60, "every packet after the restart")
    wait_for(lambda: pending(client, "jobs", "blk") == 0, 20, "every entry acknowledged")


def test_list_ingress_moves_items_to_a_processing_list_and_recovers_a_dead_instance(serve, redis_server) -> None:
    client = redis_server.client()
    ptr = json.dumps({"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": "out"}]})

    def packet(sid: str) -> bytes:
        return pb.Packet(session_id=sid, seq_no=1, data="{}", output_ptr=ptr).SerializeToString()

    # A dead instance's leftovers: a processing list with no heartbeat key.
    client.lpush("jobs:processing:dead-one", packet("orphan0"), packet("orphan1"))
    for i in range(50):
        client.lpush("jobs", packet(f"s{i}"))
    client.lpush("jobs", b"not a packet")
    served = serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_list="jobs",
        redis_claim_idle_s=0.3,
        route_allow=[f"127.0.0.1:{redis_server.port}"],
        route_allow_queues=["out"],
    )
    expected = {f"s{i}" for i in range(50)} | {"orphan0", "orphan1"}

    def outputs() -> set[str]:
        return {pb.Packet.FromString(x).session_id for x in client.lrange("out", 0, -1)}

    wait_for(lambda: expected <= outputs(), 30, "every list item and the orphans")
    mine = f"jobs:processing:{served.server.settings.instance_id}"
    wait_for(lambda: client.llen(mine) == 0, 10, "the processing list to empty")
    assert client.llen("jobs") == 0 and not client.exists("jobs:processing:dead-one")
    dead = [json.loads(x) for x in client.lrange("jobs:dead", 0, -1)]
    assert [d["code"] for d in dead] == ["INVALID_ARGUMENT"]
    assert len(client.lrange("out", 0, -1)) == 52  # each item once: nothing duplicated here


def test_set_parameters_reaches_every_instance_and_parameter_updates_list(serve, redis_server) -> None:
    one = serve(StageBlock, block_id="blk", redis_url=redis_server.url)
    two = serve(StageBlock, block_id="blk", redis_url=redis_server.url)
    other_block = serve(StageBlock, block_id="other", redis_url=redis_server.url)
    with BlockClient(one.address) as c1, BlockClient(two.address) as c2, BlockClient(other_block.address) as c3:
        c1.set_parameters({"threshold": 0.7, "nested": {"a": [1, 2]}})
        # The other instance's on_update ran too (its management reads the block's own state).
        wait_for(lambda: c2.management("params").get("threshold") == 0.7, 10, "the broadcast")
        assert c2.management("params")["nested"] == {"a": [1, 2]}
        assert c2.get_info()["parameters"]["threshold"] == 0.7
        # The original PARAMETER_UPDATES list: one instance pops it, every instance applies it.
        redis_server.client().lpush("PARAMETER_UPDATES", json.dumps({"mode": "fast"}))
        wait_for(
            lambda: c1.management("params").get("mode") == "fast" and c2.management("params").get("mode") == "fast",
            10,
            "the list update",
        )
        # Another block's instances are not touched by blk's broadcast.
        time.sleep(0.2)
        assert "threshold" not in c3.management("params")


def test_block_without_redis_runs_as_before(serve) -> None:
    served = serve(StageBlock, block_id="blk")
    assert served.server.redis is None
    with BlockClient(served.address) as client:
        assert client.run({"x": 1}).data["path"] == ["blk"]
        assert client.set_parameters({"a": 1})["applied"] == {"a": 1}


def test_grpc_keeps_serving_while_redis_is_down(serve, redis_server) -> None:
    served = serve(StageBlock, block_id="blk", redis_url=redis_server.url, redis_ingress_stream="jobs")
    with BlockClient(served.address) as client:
        redis_server.stop()
        try:
            # The ingress backs off on its own task; the event loop stays free.
            results = [client.run({"i": i}, session_id=f"g{i}").ok for i in range(20)]
            assert all(results) and client.health() == "SERVING"
        finally:
            redis_server.start()


def test_block_starts_while_redis_is_down_and_catches_up(serve, redis_server) -> None:
    redis_server.stop()
    try:
        served = serve(
            StageBlock,
            block_id="blk",
            redis_url=redis_server.url,
            redis_ingress_stream="jobs",
            redis_results_stream="results",
        )
        with BlockClient(served.address) as client:
            assert client.health() == "SERVING" and client.run({"x": 1}).ok
    finally:
        redis_server.start()
    client = redis_server.client()
    add_packets(client, "jobs", 20)
    wait_for(lambda: client.xlen("results") >= 20, 30, "the ingress to reconnect")
