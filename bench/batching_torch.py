"""Served torch MLP under load vs the same model called offline, same run.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/batching_torch.py [--packets N] [--threads T]

The block is ``examples/torch_classifier.py`` (MLP 256 -> 1024 -> 1024 -> 10, random
seeded weights) with ``on_batch`` and ``TimeBasedBatcher(32, 0.005)``, served in a
subprocess. One client process keeps 64 packets in flight over 8 streams (8 per
stream; each answer lets the next packet go), with client coalescing on
(``coalesce_window_s``) and off. Then, in this process, the same model runs offline
at the batch size the server actually formed (the packet-weighted median of the
server's batch-size histogram), both as ``TorchModel.run`` on a list of decoded
inputs (collate, forward, split; ``on_batch`` decodes a batch of float32 files in one
call instead of collating) and as a bare forward pass on a ready tensor.
torch uses ``--threads`` intra-op threads on both sides. Served and offline runs
alternate ``--rounds`` times and the medians are shown, so that load from elsewhere
on the machine falls on both alike.

It prints packets/s served and offline, the served/offline ratios, the batch-size
histogram, p50/p99 latency and the CPU microseconds per packet of the server (all
threads) and of the client process per mode (both share this machine's cores),
and, to show what gRPC and the client cost on this machine, the rate of the
scheduler alone (jobs submitted in-process), both with 64 jobs out at a time like
the served runs and with every job queued at once.

With coalescing on, each round also drives ``_raw_torch.py``: the example's
``on_preprocess`` and ``on_batch`` behind a bare ``grpc.aio`` servicer with no
aios-grpc runtime (no validation, ordering, bounds, deadlines, telemetry), same client
and load. It shows what a plain Python gRPC server reaches on this machine with this
client and model: served/bare is what the runtime's work costs, bare/offline what
gRPC, the client and sharing the cores cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Results, add_json_option, bench_env, cpu_seconds, percentile, start_block, start_process, stop

STREAMS = 8
PER_STREAM = 8


async def serve_load(
    address: str, total: int, window_s: float, pool: list, server_pid: int = 0
) -> tuple[float, list[float], tuple[float, float]]:
    """Packets/s, latencies, and (server, client) CPU microseconds per packet for ``total`` packets.

    64 packets are in flight over 8 streams. The CPU split is what each process used
    during the measured run (the warm-up excluded): on a machine with few cores the
    client's share competes with the server's.
    """
    from aios_grpc_client import AsyncBlockClient, make_packet

    latencies: list[float] = []
    per = total // STREAMS
    async with AsyncBlockClient(address) as client:

        async def one(k: int, n: int) -> None:
            stream = client.stream(timeout=600, coalesce_window_s=window_s)
            send = stream.send
            session = f"s{k}"
            clock = time.perf_counter
            sent_at = [0.0] * n
            sent = min(PER_STREAM, n)
            for seq in range(sent):
                data, files = pool[(k + seq) % len(pool)]
                sent_at[seq] = clock()
                await send(make_packet(data, files=files, session_id=session, seq_no=seq))
            if sent == n:
                await stream.close()
            # Each answer lets the next packet go.
            async for r in stream.results():
                if not r.ok:
                    raise SystemExit(f"packet failed: {r.error}")
                now = clock()
                latencies.append(now - sent_at[r.seq_no])
                if sent < n:
                    data, files = pool[(k + sent) % len(pool)]
                    sent_at[sent] = now
                    await send(make_packet(data, files=files, session_id=session, seq_no=sent))
                    sent += 1
                    if sent == n:
                        await stream.close()

        await asyncio.gather(*(one(k, 16) for k in range(STREAMS)))  # warm-up
        latencies.clear()
        server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
        client_cpu = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(one(k, per) for k in range(STREAMS)))
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        server_cpu = cpu_seconds(server_pid) - server_cpu if server_pid else 0.0
    n = per * STREAMS
    return n / elapsed, latencies, (server_cpu / n * 1e6, client_cpu / n * 1e6)


async def histogram(address: str) -> dict[int, int]:
    """The server's on_batch calls per batch size."""
    from aios_grpc_client import AsyncBlockClient

    async with AsyncBlockClient(address) as client:
        info = await client.management("aios.batcher")
    return {int(k): int(v) for k, v in info["histogram"].items()}


def typical_batch(hist: dict[int, int]) -> int:
    """Packet-weighted median batch size."""
    packets = sorted((size, size * calls) for size, calls in hist.items())
    half = sum(p for _, p in packets) / 2
    seen = 0
    for size, p in packets:
        seen += p
        if seen >= half:
            return size
    return 1


def offline(batch: int, inputs: list, seconds: float, threads: int) -> tuple[float, float]:
    """Packets/s of TorchModel.run on lists and of a bare forward pass, at ``batch``."""
    import torch

    from aios_grpc.torch import TorchModel
    from examples.torch_classifier import build_mlp

    torch.set_num_threads(threads)
    model = TorchModel(build_mlp(), device="cpu")
    rows = [inputs[i % len(inputs)] for i in range(batch)]
    ready = torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rows])

    def rate(fn) -> float:
        for _ in range(3):
            fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        return n * batch / (time.perf_counter() - start)

    return rate(lambda: model.run(rows)), rate(lambda: model(ready))


def in_process(packets: list, threads: int, in_flight: int) -> float:
    """Packets/s of the scheduler alone (no gRPC, no client): jobs submitted in this process.

    ``in_flight`` jobs are out at a time, each answer submitting the next (the served
    runs' load shape); 0 queues every job at once.
    """
    import torch

    from aios_grpc import AIOSPacket, FileInfo, TestContext
    from aios_grpc.job import Job
    from aios_grpc.runtime import Scheduler
    from aios_grpc.runtime.adapter import BlockAdapter
    from aios_grpc.settings import load_settings
    from examples.torch_classifier import TorchClassifier

    torch.set_num_threads(threads)
    ctx = TestContext()
    ctx.block_init_parameters = {"batch_n": 32, "batch_t": 0.005, "threads": threads}
    block = TorchClassifier(ctx)
    inputs = [
        AIOSPacket(
            session_id="s",
            seq_no=0,
            data=data,
            files=[FileInfo(m if isinstance(m, str) else json.dumps(m), b) for m, b in files or ()],
        )
        for data, files in packets
    ]

    async def run() -> float:
        sched = Scheduler(BlockAdapter(block), load_settings(loop_block_threshold_s=0))
        await sched.configure()
        await sched.start()
        n = 4000
        done = asyncio.Event()
        answered = [0]

        submitted = [0]

        def reply(result: object) -> None:
            answered[0] += 1
            if answered[0] == n:
                done.set()
            elif in_flight and submitted[0] < n:
                submitted[0] += 1
                sched.submit_nowait(Job(inputs[submitted[0] % len(inputs)], reply))

        start = time.perf_counter()
        for i in range(min(in_flight, n) if in_flight else n):
            submitted[0] = i + 1
            await sched.submit(Job(inputs[i % len(inputs)], reply))
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - start
        await sched.stop()
        return n / elapsed

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (server and offline)")
    parser.add_argument("--concurrent", type=int, default=1, help="AIOS_MAX_CONCURRENT_BATCHES of the server")
    parser.add_argument("--rounds", type=int, default=3, help="served/offline alternations per mode")
    parser.add_argument("--window", type=float, default=0.0005, help="client coalesce_window_s when on")
    parser.add_argument(
        "--input",
        choices=["binary", "json"],
        default="binary",
        help="x as a raw float32 file (default) or as a JSON list of 256 numbers",
    )
    add_json_option(parser)
    args = parser.parse_args()
    report = Results("batching_torch", args)
    rng = random.Random(0)
    vectors = [[rng.uniform(-1, 1) for _ in range(256)] for _ in range(64)]
    if args.input == "binary":
        import torch

        blobs = [struct.pack("<256f", *x) for x in vectors]
        # The file metadata as ready JSON text: a client sending the same header each
        # time need not encode it per packet on the CPU the server shares.
        pool = [("{}", [('{"dtype": "float32"}', b)]) for b in blobs]
        # What on_preprocess hands to on_batch for a binary packet.
        inputs: list = [torch.frombuffer(bytearray(b), dtype=torch.float32) for b in blobs]
    else:
        pool = [(json.dumps({"x": x}), None) for x in vectors]
        inputs = vectors
    params = {"batch_n": 32, "batch_t": 0.005, "threads": args.threads}
    results = {}
    # For comparison: the same block methods behind a bare grpc.aio servicer (_raw_torch.py),
    # driven alike, in the same rounds as the served runs with coalescing on.
    raw_env = {**bench_env(), "OMP_NUM_THREADS": "1", "AIOS_BLOCK_INIT_PARAMETERS": json.dumps(params)}
    raw_proc, raw_address = start_process(
        [sys.executable, str(Path(__file__).resolve().parent / "_raw_torch.py")], raw_env, wait_ready=True
    )
    raw_rates: list[float] = []
    raw_us: list[tuple[float, float]] = []
    for mode, window in (("coalescing on", args.window), ("coalescing off", 0.0)):
        proc, address = start_block(
            "examples/torch_classifier.py:TorchClassifier",
            params,
            OMP_NUM_THREADS="1",
            AIOS_MAX_CONCURRENT_BATCHES=str(args.concurrent),
        )
        served: list[float] = []
        lat: list[float] = []
        run_rates: list[float] = []
        forward_rates: list[float] = []
        server_us: list[float] = []
        client_us: list[float] = []
        try:
            # Served and offline runs alternate, so that load from elsewhere on the
            # machine falls on both alike; medians are shown.
            for _ in range(args.rounds):
                rate, round_lat, (s_us, c_us) = asyncio.run(
                    serve_load(address, args.packets // args.rounds, window, pool, proc.pid)
                )
                served.append(rate)
                server_us.append(s_us)
                client_us.append(c_us)
                lat += round_lat
                report.round(
                    f"served, {mode}", packets_per_s=rate, p50_ms=percentile(round_lat, 0.5) * 1e3, server_cpu_us=s_us
                )
                if window:
                    rate, _, cpu = asyncio.run(
                        serve_load(raw_address, args.packets // args.rounds, window, pool, raw_proc.pid)
                    )
                    raw_rates.append(rate)
                    raw_us.append(cpu)
                    report.round("bare grpc.aio server", packets_per_s=rate, server_cpu_us=cpu[0])
                batch = typical_batch(asyncio.run(histogram(address)))
                run_rate, forward_rate = offline(batch, inputs, 1.0, args.threads)
                run_rates.append(run_rate)
                forward_rates.append(forward_rate)
            hist = asyncio.run(histogram(address))
        finally:
            stop(proc)
            if not window:
                stop(raw_proc)
        results[mode] = (
            statistics.median(served),
            lat,
            hist,
            typical_batch(hist),
            statistics.median(run_rates),
            statistics.median(forward_rates),
            (statistics.median(server_us), statistics.median(client_us)),
        )
    scheduler_only = in_process(pool, args.threads, STREAMS * PER_STREAM)
    scheduler_queued = in_process(pool, args.threads, 0)
    print(
        f"MLP 256-1024-1024-10 on CPU, torch threads {args.threads}, {STREAMS} streams x {PER_STREAM} in flight, "
        f"{args.packets} packets per mode, TimeBasedBatcher(32, 0.005), {args.input} input, "
        f"max_concurrent_batches {args.concurrent}"
    )
    for mode, (rate, lat, hist, batch, run_rate, forward_rate, (s_us, c_us)) in results.items():
        print(f"\n[{mode}]")
        print(
            f"  served            {rate:8.0f} packets/s   p50 {percentile(lat, 0.5) * 1e3:.2f} ms   "
            f"p99 {percentile(lat, 0.99) * 1e3:.2f} ms"
        )
        print(f"  CPU per packet    server {s_us:.0f} us (all threads), client {c_us:.0f} us")
        report.summary(
            f"served, {mode}",
            packets_per_s=rate,
            p50_ms=percentile(lat, 0.5) * 1e3,
            p99_ms=percentile(lat, 0.99) * 1e3,
            server_cpu_us=s_us,
            offline_packets_per_s=run_rate,
            batch=batch,
        )
        print(
            f"  offline @ batch {batch:<3} TorchModel.run {run_rate:8.0f} packets/s -> served/offline "
            f"{rate / run_rate:.2f}"
        )
        print(
            f"  offline @ batch {batch:<3} bare forward   {forward_rate:8.0f} packets/s -> served/offline "
            f"{rate / forward_rate:.2f}"
        )
        if mode == "coalescing on":
            raw = statistics.median(raw_rates)
            raw_s = statistics.median(u for u, _ in raw_us)
            raw_c = statistics.median(c for _, c in raw_us)
            print(
                f"  bare server       {raw:8.0f} packets/s (no aios-grpc: the block's methods behind a bare "
                f"grpc.aio servicer, same client and load; CPU per packet server {raw_s:.0f} us, client {raw_c:.0f} us)"
            )
            print(f"    -> served/bare {rate / raw:.2f}, bare/offline {raw / run_rate:.2f}")
            report.summary("bare grpc.aio server", packets_per_s=raw, server_cpu_us=raw_s)
            report.summary("scheduler alone", packets_per_s=scheduler_only)
            print(
                f"  scheduler alone   {scheduler_only:8.0f} packets/s (no gRPC, no client; same block, "
                f"{STREAMS * PER_STREAM} in flight) -> /offline {scheduler_only / run_rate:.2f}"
            )
            print(
                f"  scheduler alone   {scheduler_queued:8.0f} packets/s (every job queued at once) "
                f"-> /offline {scheduler_queued / run_rate:.2f}"
            )
        total = sum(size * calls for size, calls in hist.items())
        shown = ", ".join(f"{size}:{calls}" for size, calls in sorted(hist.items()))
        print(f"  batch sizes (size:calls, incl. warm-up; {total} packets): {shown}")
    report.write()


if __name__ == "__main__":
    main()
