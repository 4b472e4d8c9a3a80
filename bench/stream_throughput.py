"""Process-stream throughput: the block server against a raw grpc.aio echo server.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/stream_throughput.py [--packets N]

Both servers run in their own subprocess (so the client does not share their GIL)
and speak the same ``aios.block.v1.BlockService/Process`` contract:

- raw: a bare ``grpc.aio`` servicer that answers each request with a
  ``ProcessResponse`` holding the packet, nothing else (no scheduler, no threads);
- block: ``aios-grpc serve`` of ``TrivialBlock`` below (the whole runtime: window,
  scheduler, worker-thread hand-off, per-session ordering, result conversion).

With ``--token``, a third server runs the same block with ``AIOS_AUTH_TOKENS`` set
(the token interceptor on) and is driven with ``authorization: Bearer ...`` on every
stream, in the same rounds: "token/block" is the cost of the check. A fourth, "twin",
is the plain block once more: "twin/block" is how far two identical servers differ in
that run (the noise the token figure must be read against).

One client process drives each with the same load, 1 stream and then 8 streams,
``--packets`` packets per run spread over the streams; each stream writes and reads
concurrently (pipelined). It prints packets/s per server and the ratio block/raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import grpc  # noqa: E402
from _harness import Results, TrivialBlock, add_json_option, bench_env, drive, start_process  # noqa: E402
from aios_block_stubs.v1 import block_pb2 as pb  # noqa: E402
from aios_block_stubs.v1 import block_pb2_grpc as pb_grpc  # noqa: E402

_TOKEN = "bench-token-0123456789abcdef"

__all__ = ["TrivialBlock"]  # served by `aios-grpc serve bench/stream_throughput.py:TrivialBlock`


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000, help="packets per run (spread over the streams)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=7, help="runs per server and stream count (median shown)")
    parser.add_argument("--token", action="store_true", help="also run a block server with a bearer token required")
    parser.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("stream_throughput", args)
    if args.raw_server:
        asyncio.run(_serve_raw())
        return

    env = bench_env()
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
    if args.token:
        commands["token"] = commands["block"]
        commands["twin"] = commands["block"]  # the same block again, no token: the run's own noise
    procs: list[subprocess.Popen[str]] = []
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        addresses = {}
        for name, cmd in commands.items():
            proc, address = start_process(cmd, {**env, "AIOS_AUTH_TOKENS": f'["{_TOKEN}"]'} if name == "token" else env)
            addresses[name] = (address, proc.pid)
            procs.append(proc)
        # Both servers stay up and the runs alternate, so that load from elsewhere on
        # the machine falls on both alike.
        for _ in range(args.rounds):
            for streams in args.streams:
                for name, (address, pid) in addresses.items():
                    metadata = (("authorization", f"Bearer {_TOKEN}"),) if name == "token" else ()
                    run = drive(address, pid, streams, args.packets, metadata)
                    rate, us = asyncio.run(asyncio.wait_for(run, 120))
                    rates.setdefault((name, streams), []).append(rate)
                    cpu.setdefault((name, streams), []).append(us)
                    results.round(f"{name}, {streams} streams", packets_per_s=rate, server_cpu_us=us)
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
        results.summary(f"raw, {streams} streams", packets_per_s=raw, server_cpu_us=raw_us)
        results.summary(f"block, {streams} streams", packets_per_s=block, server_cpu_us=block_us)
    if args.token:
        print(
            f"{'streams':>7} {'token pkt/s':>12} {'token/block':>11} {'token cpu us/pkt':>17} {'cpu token/block':>15}"
            f" {'cpu twin/block':>14}"
        )
        for streams in args.streams:
            block = statistics.median(rates[("block", streams)])
            token = statistics.median(rates[("token", streams)])
            block_us = statistics.median(cpu[("block", streams)])
            token_us = statistics.median(cpu[("token", streams)])
            twin_us = statistics.median(cpu[("twin", streams)])
            print(
                f"{streams:>7} {token:>12.0f} {token / block:>11.3f} {token_us:>17.1f} {token_us / block_us:>15.3f}"
                f" {twin_us / block_us:>14.3f}"
            )
            results.summary(f"token, {streams} streams", packets_per_s=token, server_cpu_us=token_us)
    results.write()


if __name__ == "__main__":
    main()
