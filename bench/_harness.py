"""Shared by the benchmarks: start a served block, drive pipelined Process streams, percentiles, CPU time."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT)]

import argparse  # noqa: E402

import grpc  # noqa: E402
from aios_block_stubs.v1 import block_pb2 as pb  # noqa: E402
from aios_block_stubs.v1 import block_pb2_grpc as pb_grpc  # noqa: E402


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json FILE``: the benchmark also writes its results there (``bench/plot.py`` draws them)."""
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE (see bench/plot.py)")


class Results:
    """What one benchmark run measured: a progress line per round on stderr, the whole as JSON.

    ``round(label, **figures)`` as each round ends; ``summary(key, **figures)`` for the
    figures of the final table; ``write()`` at the end writes the ``--json`` file (when
    given): ``{"bench", "args", "machine", "rounds": [...], "summary": {...}}``.
    """

    def __init__(self, bench: str, args: argparse.Namespace) -> None:
        self.bench = bench
        self.path = getattr(args, "json", None)
        self.data: dict[str, Any] = {
            "bench": bench,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rounds": [],
            "summary": {},
        }

    def round(self, label: str, **figures: float) -> None:
        """Record one round's figures and print them at once."""
        self.data["rounds"].append({"label": label, **figures})
        shown = ", ".join(f"{name} {value:.4g}" for name, value in figures.items())
        print(f"[{self.bench}] round {len(self.data['rounds'])}: {label}: {shown}", file=sys.stderr, flush=True)

    def summary(self, key: str, **figures: float) -> None:
        """Record one row of the final table."""
        self.data["summary"][key] = figures

    def write(self) -> None:
        """Write the JSON file asked for with ``--json`` (nothing without it)."""
        if not self.path:
            return
        self.data["machine"]["load_after"] = os.getloadavg()[0]
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.path).write_text(json.dumps(self.data, indent=2) + "\n")
        print(f"[{self.bench}] results written to {self.path}", file=sys.stderr, flush=True)


class TrivialBlock:
    """Echoes the packet's JSON text: the least work a block can do, so the runtime's cost shows most."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def on_data(self, entry: Any) -> Any:
        """Return the input data as the output (no JSON round trip)."""
        from aios_grpc import OnDataResult

        return True, OnDataResult(output=entry.packet.data)


def bench_env() -> dict[str, str]:
    """The environment of a server subprocess: this checkout first on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def start_process(
    cmd: list[str], env: dict[str, str], *, wait_ready: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """Run a server command; returns it and the ``host:port`` of its "listening on" line.

    With ``wait_ready`` it also waits for aios-grpc's "is ready" line (the block's
    ``__init__`` finished).
    """
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + 90
    address = ""
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"listening on ([^ ]+:\d+)", line)
        if found:
            address = found.group(1)
        if address and (not wait_ready or "is ready" in line):
            # Keep draining its output so that a chatty server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, address
    proc.kill()
    raise SystemExit(f"server {' '.join(cmd)} did not start:\n{''.join(seen[-20:])}")


def start_block(ref: str, params: dict[str, Any] | None = None, **env: str) -> tuple[subprocess.Popen[str], str]:
    """``aios-grpc serve ref`` in a subprocess; returns it and its ``host:port``."""
    full = bench_env()
    full.update(
        {
            "AIOS_HOST": "127.0.0.1",
            "AIOS_PORT": "0",
            "AIOS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "AIOS_METRICS_PORT": "-1",
        }
    )
    if params is not None:
        full["AIOS_BLOCK_INIT_PARAMETERS"] = json.dumps(params)
    full.update(env)
    return start_process([sys.executable, "-m", "aios_grpc", "serve", ref], full, wait_ready=True)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill a server started by ``start_block`` and reap it."""
    proc.kill()
    proc.wait(10)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) that process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_stream(
    stub: pb_grpc.BlockServiceStub, session: str, n: int, metadata: tuple[tuple[str, str], ...] = ()
) -> int:
    """Send ``n`` packets on one Process stream while reading; returns how many were answered."""
    call = stub.Process(metadata=metadata)

    async def write() -> None:
        for i in range(n):
            packet = pb.Packet(session_id=session, seq_no=i, data=json.dumps({"i": i, "text": "hello"}))
            await call.write(pb.ProcessRequest(packet=packet))
        await call.done_writing()

    writer = asyncio.create_task(write())
    answered = 0
    async for response in call:
        results = list(response.results) or [response.result]
        answered += sum(1 for r in results if r.kind in (pb.RESULT_KIND_OK, pb.RESULT_KIND_ERROR))
    await writer
    return answered


async def drive(
    address: str, pid: int, streams: int, total: int, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[float, float]:
    """One run of ``total`` packets over ``streams`` pipelined streams, after a warm-up.

    ``metadata`` goes with every stream (``authorization`` for a server with tokens).
    Returns packets/s and the server's CPU microseconds per packet.
    """
    per_stream = total // streams
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.BlockServiceStub(channel)
        await one_stream(stub, "warm-up", 500, metadata)
        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        answered = await asyncio.gather(*(one_stream(stub, f"s{k}", per_stream, metadata) for k in range(streams)))
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(pid) - cpu
    n = per_stream * streams
    if sum(answered) != n:
        raise SystemExit(f"{address}: {sum(answered)} answers for {n} packets")
    return n / elapsed, cpu / n * 1e6
