"""What telemetry costs on the Process stream: no telemetry vs metrics vs metrics and traces.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/tracing_cost.py [--packets N]

One server per mode below, of the same trivial block (``bench/_harness.py:TrivialBlock``),
each in its own subprocess, driven by the same client as ``stream_throughput.py``
(pipelined Process streams, 1 and 8 streams), runs alternating so that outside load
falls on all alike:

- none: the no-op ``Telemetry`` seam (nothing recorded);
- metrics: the default ``Observability`` with tracing off (built-in metrics, the
  Prometheus endpoint on a free port);
- traced: the same plus traces: a span per packet and per stage, W3C context written
  into each packet's headers, spans through a ``BatchSpanProcessor`` into an exporter
  that counts and drops them (the export itself is the collector's cost, not ours);
- lite: traced with ``AIOS_TRACING_STAGES=false`` (the packet span only);
- 1%: traced with the sampler ``ParentBased(TraceIdRatioBased(0.01))``, the usual
  production choice: one packet in a hundred is recorded, the others only pass their
  "not sampled" context on.

It prints packets/s and the server's CPU time per packet for each, the ratios to
metrics (the cost of turning tracing on), and checks that the traced server exported
a span per packet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from _harness import Results, TrivialBlock, add_json_option, bench_env, drive, start_process  # noqa: E402


class _CountingExporter:
    """A span exporter that counts what it is given and drops it."""

    def __init__(self) -> None:
        self.spans = 0
        self.packet_spans = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        self.packet_spans += sum(1 for s in spans if s.name == "aios.packet")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered here."""
        return True


async def _serve(mode: str, report: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from aios_grpc.server import BlockServer, configure_logging
    from aios_grpc.settings import load_settings
    from aios_grpc.telemetry import Observability, Telemetry

    settings = load_settings(host="127.0.0.1", port=0, metrics_port=0, tracing="off", tracing_stages=mode != "lite")
    configure_logging("WARNING")
    exporter = _CountingExporter()
    provider = None
    telemetry: Telemetry
    if mode == "none":
        telemetry = Telemetry()
    elif mode == "metrics":
        telemetry = Observability(settings)
    else:
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01))) if mode == "1%" else TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536))  # type: ignore[arg-type]
        telemetry = Observability(settings, tracer_provider=provider)
    server = BlockServer(TrivialBlock, settings, telemetry=telemetry)
    await server.start()
    print(f"listening on {server.address}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)
    if provider is not None:
        provider.shutdown()
    if not report:
        return
    text = f"spans exported: {exporter.spans}, packet spans: {exporter.packet_spans}"
    await asyncio.to_thread(Path(report).write_text, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=10_000, help="packets per run (spread over the streams)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and stream count (median shown)")
    parser.add_argument("--serve", choices=["none", "metrics", "traced", "lite", "1%"], help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("tracing_cost", args)
    if args.serve:
        asyncio.run(_serve(args.serve, args.report))
        return

    env = bench_env()
    modes = ("none", "metrics", "traced", "lite", "1%")
    procs = {}
    report = Path(tempfile.mkdtemp(prefix="aios-bench-")) / "spans.txt"
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    try:
        addresses = {}
        for mode in modes:
            cmd = [sys.executable, __file__, "--serve", mode, "--report", str(report) if mode == "traced" else ""]
            procs[mode], addresses[mode] = start_process(cmd, env)
        for _ in range(args.rounds):
            for streams in args.streams:
                for mode in modes:
                    rate, cpu = asyncio.run(drive(addresses[mode], procs[mode].pid, streams, args.packets))
                    rates.setdefault((mode, streams), []).append(rate)
                    cpus.setdefault((mode, streams), []).append(cpu)
                    results.round(f"{mode}, {streams} streams", packets_per_s=rate, server_cpu_us=cpu)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    sent = args.rounds * (sum((args.packets // s) * s for s in args.streams) + 500 * len(args.streams))
    print(f"packets per run: {args.packets}, rounds: {args.rounds} (median), cpus: {os.cpu_count()}")
    print("throughput (packets/s) and server CPU per packet (µs), by telemetry; ratios of throughput to metrics:")
    print(
        f"{'streams':>7} " + " ".join(f"{m:>7}" for m in modes) + " | "
        + " ".join(f"{m + '/metrics':>14}" for m in modes if m != "metrics") + " | cpu µs/pkt: "
        + " ".join(f"{m:>7}" for m in modes)
    )  # fmt: skip
    for streams in args.streams:
        rate = {m: statistics.median(rates[(m, streams)]) for m in modes}
        cpu = {m: statistics.median(cpus[(m, streams)]) for m in modes}
        print(
            f"{streams:>7} " + " ".join(f"{rate[m]:>7.0f}" for m in modes) + " | "
            + " ".join(f"{rate[m] / rate['metrics']:>14.2f}" for m in modes if m != "metrics") + " |             "
            + " ".join(f"{cpu[m]:>7.0f}" for m in modes)
        )  # fmt: skip
        for m in modes:
            results.summary(f"{m}, {streams} streams", packets_per_s=rate[m], server_cpu_us=cpu[m])
    spans = report.read_text() if report.exists() else "no report"
    print(f"traced server: {spans} (packets sent to it: {sent})")
    results.write()


if __name__ == "__main__":
    main()
