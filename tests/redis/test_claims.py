"""Stream ingress: a packet slower than the claim idle time is not taken over while its instance lives."""

from __future__ import annotations

import json
import os
import signal

from aios_grpc._pb import pb
from tests.blocks.graph import StageBlock
from tests.redis.test_stream_ingress import pending, result_sessions, wait_for


def test_a_slow_packet_is_processed_once_while_its_instance_is_alive(serve, redis_server) -> None:
    client = redis_server.client()
    settings = {
        "block_id": "blk",
        "redis_url": redis_server.url,
        "redis_ingress_stream": "jobs",
        "redis_results_stream": "results",
        "redis_claim_idle_s": 0.4,
    }
    first = serve(StageBlock, **settings)
    slow = pb.Packet(session_id="slow", seq_no=1, data=json.dumps({"sleep": 2.0}))
    client.xadd("jobs", {"packet": slow.SerializeToString()})
    wait_for(lambda: pending(client, "jobs", "blk") == 1, 10, "the first instance to take it")
    # A second instance reclaims whatever stays idle for 0.4 s; the slow packet runs 2 s.
    second = serve(StageBlock, **settings)
    wait_for(lambda: client.xlen("results") >= 1, 20, "the slow packet's result")
    wait_for(lambda: pending(client, "jobs", "blk") == 0, 10, "acknowledged")
    # A second run, had there been one, would have started within 0.6 s and be running now.
    ingresses = [s.server.redis.ingresses[0] for s in (first, second)]
    assert [i.claimed for i in ingresses] == [0, 0]
    wait_for(lambda: all(s.server.scheduler.in_flight == 0 for s in (first, second)), 10, "both idle")
    assert result_sessions(client, "results") == ["slow"]
    assert ingresses[0].refreshed >= 2


def test_entries_of_a_killed_instance_are_still_reclaimed(spawn, redis_server) -> None:
    # Refreshing claims must not keep a dead instance's entries from the others.
    client = redis_server.client()
    env = {
        "AIOS_BLOCK_ID": "blk",
        "AIOS_REDIS_URL": redis_server.url,
        "AIOS_REDIS_INGRESS_STREAM": "jobs",
        "AIOS_REDIS_RESULTS_STREAM": "results",
        "AIOS_REDIS_CLAIM_IDLE_S": "0.5",
    }
    client.xgroup_create("jobs", "blk", id="0", mkstream=True)
    first = spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_INSTANCE_ID": "first"})
    slow = pb.Packet(session_id="slow", seq_no=1, data=json.dumps({"sleep": 30.0}))
    client.xadd("jobs", {"packet": slow.SerializeToString()})
    wait_for(lambda: pending(client, "jobs", "blk") == 1, 20, "the first instance to take it")
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    # The second instance claims the entry (its second delivery) and runs it.
    spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_INSTANCE_ID": "second"})

    def owner() -> tuple[str, int]:
        entry = client.xpending_range("jobs", "blk", "-", "+", 1)[0]
        return entry["consumer"].decode(), int(entry["times_delivered"])

    wait_for(lambda: owner()[0] == "second", 20, "the second instance to claim the entry")
    assert owner()[1] == 2
