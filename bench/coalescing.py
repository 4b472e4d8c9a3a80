"""Packets/s with client coalescing vs without, trivial block, same run.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/coalescing.py [--packets N] [--streams S]

One served trivial block (echo through ``on_data``) in a subprocess; one client
process drives it with the Python ``AsyncBlockClient``, ``--streams`` streams writing
and reading concurrently, in three modes that alternate round by round:

- ``none``: one packet per ProcessRequest (the per-message ceiling);
- ``window``: ``coalesce_window_s=0.002`` (packets written within 2 ms share a request);
- ``count``: ``coalesce=64`` (64 packets per request).

It prints the median packets/s of each mode and the ratio to ``none``, the server's
CPU time per packet (user + system, all its threads), which swings less with
whatever else runs on the machine than throughput does, and the client process's
CPU time per packet (it shares the machine's cores with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the server imports this file too

from _harness import Results, add_json_option, cpu_seconds, start_block, stop

from aios_grpc import OnDataResult


class Echo:
    """Echoes the packet's JSON text."""

    def __init__(self, context: object) -> None:
        self.context = context

    def on_data(self, entry: object) -> tuple:
        """Return the input as the output."""
        return True, OnDataResult(output=entry.packet.data)  # type: ignore[attr-defined]


MODES = {"none": {}, "window": {"coalesce_window_s": 0.002}, "count": {"coalesce": 64}}


async def drive(address: str, streams: int, total: int, options: dict) -> float:
    """Packets/s for ``total`` packets over ``streams`` streams with the client ``options``."""
    from aios_grpc_client import AsyncBlockClient

    per = total // streams
    async with AsyncBlockClient(address) as client:

        async def one(k: int, n: int) -> int:
            count = 0
            async for r in client.process(
                ({"i": i, "text": "hello"} for i in range(n)), session_id=f"s{k}", timeout=300, **options
            ):
                count += r.ok
            return count

        await one(-1, 200)  # warm-up
        start = time.perf_counter()
        done = await asyncio.gather(*(one(k, per) for k in range(streams)))
        elapsed = time.perf_counter() - start
    if sum(done) != per * streams:
        raise SystemExit(f"only {sum(done)} of {per * streams} packets answered OK")
    return per * streams / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("coalescing", args)
    proc, address = start_block("bench/coalescing.py:Echo")
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    client_cpu: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for _ in range(args.rounds):
            for mode, options in MODES.items():
                before = cpu_seconds(proc.pid)
                mine = time.process_time()
                rates[mode].append(asyncio.run(drive(address, args.streams, args.packets, options)))
                # Includes the 200-packet warm-up: a small overcount, alike for every mode.
                cpu[mode].append((cpu_seconds(proc.pid) - before) / args.packets * 1e6)
                client_cpu[mode].append((time.process_time() - mine) / args.packets * 1e6)
                results.round(mode, packets_per_s=rates[mode][-1], server_cpu_us=cpu[mode][-1])
    finally:
        stop(proc)
    base = statistics.median(rates["none"])
    base_cpu = statistics.median(cpu["none"])
    print(f"trivial block, {args.streams} streams, {args.packets} packets per run, median of {args.rounds} rounds")
    print(
        f"{'mode':<34} {'packets/s':>10} {'vs none':>8} {'server cpu us/pkt':>18} {'cpu vs none':>11} "
        f"{'client cpu us/pkt':>18}"
    )
    labels = {"none": "no coalescing", "window": "coalesce_window_s=0.002", "count": "coalesce=64"}
    for mode in MODES:
        rate = statistics.median(rates[mode])
        us = statistics.median(cpu[mode])
        client_us = statistics.median(client_cpu[mode])
        print(
            f"{labels[mode]:<34} {rate:>10.0f} {rate / base:>7.2f}x {us:>18.1f} {base_cpu / us:>10.2f}x "
            f"{client_us:>18.1f}"
        )
        results.summary(labels[mode], packets_per_s=rate, server_cpu_us=us, client_cpu_us=client_us)
    results.write()


if __name__ == "__main__":
    main()
