"""Server RSS with callers that never read their answers (issue 12, the byte bound).

Usage: .venv/bin/python bench/edges_memory.py [--streams 64] [--packets 300] [--output-bytes 100000]
       [--unsent-bytes 1048576]

Starts ``aios-grpc serve tests.blocks.edges:BigOutputBlock`` (every output is
``--output-bytes``), opens ``--streams`` Process streams on a channel each, sends
``--packets`` lone packets on each and never reads, and prints the server's RSS before
and once it stopped growing, next to the bound of docs/configuration.md (*Worst-case
memory*).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.helpers import rss, stable_rss  # noqa: E402 (after the path is set)

MIB = 1024 * 1024


def start_server(output_bytes: int, unsent_bytes: int) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "AIOS_PORT": "0",
        "AIOS_METRICS_PORT": "0",
        "AIOS_HOST": "127.0.0.1",
        "AIOS_WORKERS": "2",
        "AIOS_GC_FREEZE": "false",
        "AIOS_TEST_OUTPUT_BYTES": str(output_bytes),
        "AIOS_STREAM_MAX_UNSENT_BYTES": str(unsent_bytes),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "aios_grpc", "serve", "tests.blocks.edges:BigOutputBlock"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on [^ ]+:(\d+)", line)
        if found:
            return proc, f"127.0.0.1:{found.group(1)}"
    raise RuntimeError("the server did not start")


async def never_reading(address: str, streams: int, packets: int) -> list[Any]:
    import grpc

    from aios_grpc._pb import pb, pb_grpc

    async def requests() -> Any:
        for k in range(packets):
            yield pb.ProcessRequest(packet=pb.Packet(session_id="s", seq_no=k + 1, data="{}"))
        await asyncio.Event().wait()

    opened = []
    for _ in range(streams):
        channel = grpc.aio.insecure_channel(address, options=[("grpc.http2.bdp_probe", 0)])
        opened.append((channel, pb_grpc.BlockServiceStub(channel).Process(requests())))
    return opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--packets", type=int, default=300)
    parser.add_argument("--output-bytes", type=int, default=100_000)
    parser.add_argument("--unsent-bytes", type=int, default=MIB)
    args = parser.parse_args()
    from aios_grpc_client import BlockClient

    proc, address = start_server(args.output_bytes, args.unsent_bytes)
    try:
        with BlockClient(address) as client:
            client.wait_until_serving(20)
            client.run({}, timeout=20)
        base = rss(proc.pid)

        async def load() -> int:
            opened = await never_reading(address, args.streams, args.packets)
            peak = await asyncio.to_thread(stable_rss, proc.pid)
            for channel, call in opened:
                call.cancel()
                await channel.close()
            return peak

        peak = asyncio.run(load())
    finally:
        proc.kill()
        proc.wait(10)
    window = MIB
    bound = args.streams * (4 * args.unsent_bytes + args.output_bytes + window)
    print(
        f"streams {args.streams} x {args.packets} packets, outputs {args.output_bytes} B, "
        f"AIOS_STREAM_MAX_UNSENT_BYTES {args.unsent_bytes}: RSS {base / MIB:.0f} -> {peak / MIB:.0f} MiB "
        f"(+{(peak - base) / MIB:.0f} MiB); bound N x (4B + S + R) = +{bound / MIB:.0f} MiB"
    )


if __name__ == "__main__":
    main()
