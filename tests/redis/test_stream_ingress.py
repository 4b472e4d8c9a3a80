"""Redis Stream ingress: consumer group, ack after the answer, reclaim, dead letters."""

from __future__ import annotations

import json
import os
import signal

from aios_grpc._pb import pb
from tests.blocks.graph import StageBlock
from tests.helpers import add_packets, pending, result_sessions, wait_for


def test_entries_are_processed_answered_and_acknowledged(serve, redis_server) -> None:
    client = redis_server.client()
    add_packets(client, "jobs", 150)  # before the block starts: the group starts at id 0
    served = serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_stream="jobs",
        redis_results_stream="results",
        redis_batch=32,
    )
    add_packets(client, "jobs", 150, prefix="t")
    wait_for(lambda: client.xlen("results") >= 300, 30, "300 results")
    wait_for(lambda: pending(client, "jobs", "blk") == 0, 10, "every entry acknowledged")
    sessions = result_sessions(client, "results")
    assert sorted(sessions) == sorted([f"s{i}" for i in range(150)] + [f"t{i}" for i in range(150)])
    groups = client.xinfo_groups("jobs")
    assert groups[0]["name"] == b"blk"
    consumers = client.xinfo_consumers("jobs", "blk")
    assert [c["name"].decode() for c in consumers] == [served.server.settings.instance_id]


def test_bad_entries_and_failed_packets_go_to_the_dead_letter_stream(serve, redis_server) -> None:
    client = redis_server.client()
    serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_stream="jobs",
        redis_results_stream="results",
    )
    client.xadd("jobs", {"packet": b"\xff\xfe not protobuf"})
    client.xadd("jobs", {"other": b"x"})
    add_packets(client, "jobs", 1, prefix="fail", data={"fail": "model says no"})
    add_packets(client, "jobs", 1, prefix="ok")
    wait_for(lambda: client.xlen("jobs:dead") >= 3 and client.xlen("results") >= 1, 20, "dead letters")
    wait_for(lambda: pending(client, "jobs", "blk") == 0, 10, "acknowledged")
    dead = [fields for _, fields in client.xrange("jobs:dead")]
    codes = sorted(f[b"code"].decode() for f in dead)
    assert codes == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "UNKNOWN"]
    assert any(b"model says no" in f[b"error"] for f in dead)
    assert result_sessions(client, "results") == ["ok0"]


def test_killed_consumer_entries_are_reclaimed_by_another_instance(spawn, redis_server) -> None:
    client = redis_server.client()
    env = {
        "AIOS_BLOCK_ID": "blk",
        "AIOS_REDIS_URL": redis_server.url,
        "AIOS_REDIS_INGRESS_STREAM": "jobs",
        "AIOS_REDIS_RESULTS_STREAM": "results",
        "AIOS_REDIS_CLAIM_IDLE_S": "1.0",
        "AIOS_WORKERS": "2",
        "AIOS_BLOCK_INIT_PARAMETERS": json.dumps({"sleep": 0.02}),
    }
    first = spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_INSTANCE_ID": "first"})
    n = 300
    add_packets(client, "jobs", n)
    # Let the first instance take entries, then kill it without any chance to clean up.
    wait_for(lambda: client.xlen("results") >= 20, 60, "the first instance to start")
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    left_pending = pending(client, "jobs", "blk")
    assert left_pending > 0, "the killed instance held no pending entries"
    second = spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_INSTANCE_ID": "second"})
    try:
        wait_for(lambda: len(set(result_sessions(client, "results"))) >= n, 90, "every packet processed")
        wait_for(lambda: pending(client, "jobs", "blk") == 0, 30, "every entry acknowledged")
    except AssertionError as exc:
        second.stop()
        state = {
            "results": len(set(result_sessions(client, "results"))),
            "consumers": client.xinfo_consumers("jobs", "blk"),
            "groups": client.xinfo_groups("jobs"),
        }
        raise AssertionError(f"{exc}; {state}; second's log:\n{second.rest_of_log()[-3000:]}") from None
    assert set(result_sessions(client, "results")) == {f"s{i}" for i in range(n)}
    consumers = {c["name"].decode(): c["pending"] for c in client.xinfo_consumers("jobs", "blk")}
    assert consumers.get("first", 0) == 0 and "second" in consumers


def test_entry_failing_with_a_retryable_error_is_dead_lettered_after_max_deliveries(serve, redis_server) -> None:
    client = redis_server.client()
    # A muxer-less block answering UNAVAILABLE: a downstream target that is down.
    serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_stream="jobs",
        redis_claim_idle_s=0.2,
        redis_max_deliveries=2,
        route_allow=["127.0.0.1:1"],
        route_retry_timeout_s=0.2,
    )
    ptr = json.dumps({"outputs": [{"host": "127.0.0.1", "port": 1, "transport": "grpc"}]})
    client.xadd("jobs", {"packet": pb.Packet(session_id="r", seq_no=1, data="{}", output_ptr=ptr).SerializeToString()})
    wait_for(lambda: client.xlen("jobs:dead") >= 1, 30, "the dead letter")
    fields = client.xrange("jobs:dead")[0][1]
    assert b"AIOS_REDIS_MAX_DELIVERIES=2" in fields[b"error"]
    assert pb.Packet.FromString(fields[b"packet"]).session_id == "r"
    wait_for(lambda: pending(client, "jobs", "blk") == 0, 10, "acknowledged")


def test_drain_stops_reading_and_acknowledges_what_was_in_flight(serve, redis_server) -> None:
    client = redis_server.client()
    served = serve(
        StageBlock,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_stream="jobs",
        redis_results_stream="results",
        redis_batch=10,
        block_init_parameters={"sleep": 0.05},
    )
    add_packets(client, "jobs", 200)
    wait_for(lambda: client.xlen("results") >= 5, 30, "processing to start")
    served.close(grace_s=20)
    # Nothing it took is left pending, and it stopped reading: the rest waits for another instance.
    assert pending(client, "jobs", "blk") == 0
    done = client.xlen("results")
    assert 5 <= done < 200
    read = next(g for g in client.xinfo_groups("jobs") if g["name"] == b"blk")["entries-read"]
    assert read == done


def test_a_key_of_the_wrong_type_is_reported_and_the_server_keeps_serving(serve, redis_server, caplog) -> None:
    from aios_grpc_client import BlockClient

    redis_server.client().set("jobs", "a string, not a stream")
    served = serve(StageBlock, block_id="blk", redis_url=redis_server.url, redis_ingress_stream="jobs")
    wait_for(lambda: any("reading jobs failed" in r.getMessage() for r in caplog.records), 10, "the error log")
    with BlockClient(served.address) as client:
        assert client.run({"x": 1}).ok
