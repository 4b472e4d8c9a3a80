"""Block graphs in separate processes: fan-out, fan-in with a muxer, a restart in the middle."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from typing import Any

from aios_grpc_client import BlockClient, make_packet

from aios_grpc.redis.local import free_port
from tests.blocks.graph import StageBlock
from tests.helpers import redis_stream_target, stream_packets, wait_for

ALLOW = json.dumps(["127.0.0.1:*"])


def target(address: str, block_id: str) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    return {"host": host, "port": int(port), "transport": "grpc", "block_id": block_id}


def test_four_block_graph_fan_out_and_mux_delivers_every_session_once(spawn, redis_server) -> None:
    env = {"AIOS_ROUTE_ALLOW": ALLOW, "AIOS_ROUTE_ALLOW_QUEUES": '["final"]', "AIOS_WORKERS": "2"}
    procs = {
        name: spawn(f"tests.blocks.graph:{cls}", env={**env, "AIOS_BLOCK_ID": name})
        for name, cls in [("a", "StageBlock"), ("b", "StageBlock"), ("c", "StageBlock"), ("d", "JoinBlock")]
    }
    addr = {name: p.address for name, p in procs.items()}
    graph = json.dumps(
        {
            "is_graph": True,
            "graph": {
                "a": {"outputs": [target(addr["b"], "b"), target(addr["c"], "c")]},
                "b": {"outputs": [target(addr["d"], "d")]},
                "c": {"outputs": [target(addr["d"], "d")]},
                "d": "final",
                "final": {"outputs": [redis_stream_target(redis_server.port, "final")]},
            },
        }
    )
    n = 1000
    packets = [make_packet({"i": i}, session_id=f"s{i}", seq_no=1, output_ptr=graph) for i in range(n)]
    with BlockClient(addr["a"]) as client:
        results = [r for r in client.process(packets, timeout=120) if r.terminal]
    errors = [r.error for r in results if not r.ok]
    assert not errors, errors[:3]
    assert sorted(r.session_id for r in results) == sorted(p.session_id for p in packets)
    outputs = stream_packets(redis_server.client(), "final")
    seen = Counter((p.session_id, p.seq_no) for p in outputs)
    assert set(seen) == {(f"s{i}", 1) for i in range(n)}
    assert max(seen.values()) == 1  # every session's final output exactly once
    for packet in outputs[:50]:
        data = json.loads(packet.data)
        assert data == {"joined": ["a/b", "a/c"], "n": 2, "at": "d"}


def test_chain_loses_nothing_when_the_middle_block_restarts(spawn, serve, redis_server) -> None:
    env = {
        "AIOS_ROUTE_ALLOW": ALLOW,
        "AIOS_ROUTE_ALLOW_QUEUES": '["final"]',
        "AIOS_WORKERS": "2",
        "AIOS_ROUTE_RETRY_TIMEOUT_S": "30",
    }
    c = spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_BLOCK_ID": "c"})
    b_port = free_port()
    b_env = {
        **env,
        "AIOS_BLOCK_ID": "b",
        "AIOS_PORT": str(b_port),
        "AIOS_BLOCK_INIT_PARAMETERS": json.dumps({"sleep": 0.005}),
    }
    b = spawn("tests.blocks.graph:StageBlock", env=b_env)
    # a runs in this process, so that the test can look at its link to b.
    a = serve(StageBlock, block_id="a", route_allow=["127.0.0.1:*"], route_retry_timeout_s=30)
    graph = json.dumps(
        {
            "is_graph": True,
            "graph": {
                "a": {"outputs": [target(b.address, "b")]},
                "b": {"outputs": [target(c.address, "c")]},
                "c": {"outputs": [redis_stream_target(redis_server.port, "final")]},
            },
        }
    )
    n = 400
    packets = [make_packet({"i": i}, session_id=f"s{i}", seq_no=1, output_ptr=graph) for i in range(n)]
    results: list[Any] = []

    def send() -> None:
        with BlockClient(a.address) as client:
            results.extend(r for r in client.process(packets, timeout=120) if r.terminal)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: redis_server.client().xlen("final") >= 50, 60, "the chain to run")
    os.kill(b.proc.pid, signal.SIGKILL)  # packets are in flight in b
    b.proc.wait(10)
    done_before_restart = redis_server.client().xlen("final")
    spawn("tests.blocks.graph:StageBlock", env=b_env)
    sender.join(120)
    assert not sender.is_alive()
    assert done_before_restart < n, "b was killed after the run ended: nothing was tested"
    assert [r for r in results if not r.ok] == []
    assert len(results) == n
    seen = Counter((p.session_id, p.seq_no) for p in stream_packets(redis_server.client(), "final"))
    assert set(seen) == {(f"s{i}", 1) for i in range(n)}  # at least once, none lost
    link = a.server.router.grpc_links[b.address]
    assert link.resent > 0 and link.streams_opened >= 2  # a resent what b never answered
