"""Latency at low load: 1 stream, one packet at a time, through TimeBasedBatcher(32, 0.01).

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/latency_low_load.py [--packets N]

A batch closes as soon as nothing more is queued, so a lone packet must not wait the
batcher's T (10 ms). The same trivial work is served twice, in one run: with
``on_batch`` + ``TimeBasedBatcher(32, 0.01)`` and with plain ``on_data`` (no batcher,
the baseline). It prints p50/p90/p99 of the round-trip for both; the p50 of the
batched block must stay well under 10 ms and close to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the server imports this file too

from _harness import Results, add_json_option, percentile, start_block, stop

from aios_grpc import OnDataResult, TimeBasedBatcher


class BatchedEcho:
    """``on_batch`` under TimeBasedBatcher(32, 0.01): echoes each entry's data."""

    def __init__(self, context: object) -> None:
        self.context = context

    def get_batcher(self) -> TimeBasedBatcher:
        """The batcher under test."""
        return TimeBasedBatcher(N=32, T=0.01)

    def on_batch(self, entries: list) -> list:
        """One echo per entry."""
        return [(True, OnDataResult(output=e.packet.data)) for e in entries]


class PlainEcho:
    """The baseline: the same echo through ``on_data``."""

    def __init__(self, context: object) -> None:
        self.context = context

    def on_data(self, entry: object) -> tuple:
        """Echo the entry's data."""
        return True, OnDataResult(output=entry.packet.data)  # type: ignore[attr-defined]


def measure(address: str, packets: int) -> list[float]:
    """Round-trip seconds of ``packets`` packets sent one at a time on one stream."""
    from aios_grpc_client import BlockClient, make_packet

    with BlockClient(address) as client:
        stream = client.stream(timeout=600)
        results = stream.results()
        times = []
        for k in range(-20, packets):  # 20 warm-up packets
            start = time.perf_counter()
            stream.send(make_packet({"k": k}, session_id="s", seq_no=k + 20))
            result = next(results)
            took = time.perf_counter() - start
            assert result.ok, result
            if k >= 0:
                times.append(took)
        stream.close()
        list(results)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=500)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("latency_low_load", args)
    servers = {name: start_block(f"bench/latency_low_load.py:{name}") for name in ("BatchedEcho", "PlainEcho")}
    try:
        lat: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(2):  # alternate so background load falls on both alike
            for name, (_, address) in servers.items():
                times = measure(address, args.packets // 2)
                lat[name] += times
                results.round(name, p50_ms=percentile(times, 0.5) * 1e3, p99_ms=percentile(times, 0.99) * 1e3)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    print(f"1 stream, one packet at a time, {len(lat['PlainEcho'])} packets per block")
    print(f"{'block':<36} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")
    labels = {"BatchedEcho": "on_batch + TimeBasedBatcher(32, 0.01)", "PlainEcho": "on_data (no batcher)"}
    for name, label in labels.items():
        v = lat[name]
        print(
            f"{label:<36} {percentile(v, 0.5) * 1e3:>7.2f} {percentile(v, 0.9) * 1e3:>7.2f} "
            f"{percentile(v, 0.99) * 1e3:>7.2f}"
        )
        results.summary(
            label,
            p50_ms=percentile(v, 0.5) * 1e3,
            p90_ms=percentile(v, 0.9) * 1e3,
            p99_ms=percentile(v, 0.99) * 1e3,
        )
    p50 = percentile(lat["BatchedEcho"], 0.5)
    print(
        f"batched p50 {'does not include' if p50 < 0.01 else 'INCLUDES'} the 10 ms wait "
        f"(p50 {p50 * 1e3:.2f} ms; batched/plain p50 ratio "
        f"{p50 / percentile(lat['PlainEcho'], 0.5):.2f})"
    )
    results.write()


if __name__ == "__main__":
    main()
