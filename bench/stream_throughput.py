"""Process-stream throughput: the block server against a raw grpc.aio echo server.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/stream_throughput.py [--packets N]

Both servers run in their own subprocess (so the client does not share their GIL)
and speak the same ``aios.block.v1.BlockService/Process`` contract:

- raw: a bare ``grpc.aio`` servicer that answers each request with a
  ``ProcessResponse`` holding the packet, nothing else (no scheduler, no threads);
- block: ``aios-grpc serve`` of ``TrivialBlock`` below (the whole runtime: window,
  scheduler, worker-thread hand-off, per-session ordering, result conversion).

One client process drives each with the same load, 1 stream and then 8 streams,
``--packets`` packets per run spread over the streams; each stream writes and reads
concurrently (pipelined). It prints packets/s per server and the ratio block/raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "generated"), str(ROOT / "clients" / "python"), str(ROOT)]

import grpc  # noqa: E402
from aios.block.v1 import block_pb2 as pb  # noqa: E402
from aios.block.v1 import block_pb2_grpc as pb_grpc  # noqa: E402


class TrivialBlock:
    """Echoes the packet's JSON text: the least work a block can do."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def on_data(self, entry: Any) -> Any:
        """Return the input data as the output (no JSON round trip)."""
        from aios_grpc import OnDataResult

        return True, OnDataResult(output=entry.packet.data)


# -- raw echo server ----------------------------------------------------------------


class _RawEcho(pb_grpc.BlockServiceServicer):
    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessRequest], context: Any
    ) -> AsyncIterator[pb.ProcessResponse]:
        async for request in request_iterator:
            packet = request.packet
            yield pb.ProcessResponse(
                result=pb.PacketResult(
                    session_id=packet.session_id, seq_no=packet.seq_no, kind=pb.RESULT_KIND_OK, output=packet
                )
            )


async def _serve_raw() -> None:
    server = grpc.aio.server()
    pb_grpc.add_BlockServiceServicer_to_server(_RawEcho(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


# -- client ---------------------------------------------------------------------------


async def _one_stream(stub: pb_grpc.BlockServiceStub, session: str, n: int) -> int:
    call = stub.Process()

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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(address: str, pid: int, streams: int, total: int) -> tuple[float, float]:
    """Packets/s and the server's CPU microseconds per packet for one run."""
    per_stream = total // streams
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.BlockServiceStub(channel)
        await _one_stream(stub, "warm-up", 500)
        cpu = _cpu_s(pid)
        start = time.perf_counter()
        answered = await asyncio.gather(*(_one_stream(stub, f"s{k}", per_stream) for k in range(streams)))
        elapsed = time.perf_counter() - start
        cpu = _cpu_s(pid) - cpu
    n = per_stream * streams
    if sum(answered) != n:
        raise SystemExit(f"{address}: {sum(answered)} answers for {n} packets")
    return n / elapsed, cpu / n * 1e6


def _start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"listening on ([^ ]+:\d+)", line)
        if found:
            # Keep reading its output so that a chatty server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, found.group(1)
    proc.kill()
    raise SystemExit(f"server {' '.join(cmd)} did not start:\n{''.join(seen[-20:])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000, help="packets per run (spread over the streams)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and stream count (median shown)")
    parser.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        asyncio.run(_serve_raw())
        return

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["AIOS_LOG_LEVEL"] = "INFO"
    env.setdefault("AIOS_METRICS_PORT", "0")  # telemetry stays on, on a free port
    commands = {
        "raw": [sys.executable, __file__, "--raw-server"],
        "block": [
            sys.executable,
            "-m",
            "aios_grpc",
            "serve",
            "bench/stream_throughput.py:TrivialBlock",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
    }
    procs: list[subprocess.Popen[str]] = []
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        addresses = {}
        for name, cmd in commands.items():
            proc, address = _start(cmd, env)
            addresses[name] = (address, proc.pid)
            procs.append(proc)
        # Both servers stay up and the runs alternate, so that load from elsewhere on
        # the machine falls on both alike.
        for _ in range(args.rounds):
            for streams in args.streams:
                for name, (address, pid) in addresses.items():
                    rate, us = asyncio.run(asyncio.wait_for(_drive(address, pid, streams, args.packets), 120))
                    rates.setdefault((name, streams), []).append(rate)
                    cpu.setdefault((name, streams), []).append(us)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
    print(f"packets per run: {args.packets}, rounds: {args.rounds} (median), cpus: {os.cpu_count()}")
    # Throughput swings with whatever else runs on the machine; server CPU time per
    # packet does much less, so it is shown too (block/raw CPU: how much more work).
    print(
        f"{'streams':>7} {'raw pkt/s':>10} {'block pkt/s':>12} {'block/raw':>9}"
        f" {'raw cpu us/pkt':>15} {'block cpu us/pkt':>17} {'cpu block/raw':>13}"
    )
    for streams in args.streams:
        raw = statistics.median(rates[("raw", streams)])
        block = statistics.median(rates[("block", streams)])
        raw_us = statistics.median(cpu[("raw", streams)])
        block_us = statistics.median(cpu[("block", streams)])
        print(
            f"{streams:>7} {raw:>10.0f} {block:>12.0f} {block / raw:>9.2f}"
            f" {raw_us:>15.0f} {block_us:>17.0f} {block_us / raw_us:>13.2f}"
        )


if __name__ == "__main__":
    main()
