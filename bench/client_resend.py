"""The Python client's own CPU per packet with resends on (the default) and off (``retries=0``).

Usage: python bench/client_resend.py [--packets N]

The block (tests.blocks.basic:EchoBlock) is served by a subprocess, so the CPU time read
here is the client's alone: building packets, the resend ledger, gRPC's client side and
the results. Each setting runs twice, alternating, for coalesce=1 and coalesce=64.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT)]

from aios_grpc_client import BlockClient  # noqa: E402


def _serve() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "AIOS_PORT": "0", "AIOS_METRICS_PORT": "0", "AIOS_HOST": "127.0.0.1"}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aios_grpc", "serve", "tests.blocks.basic:EchoBlock"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on [^ ]+:(\d+)", line)
        if found:
            return proc, f"127.0.0.1:{found.group(1)}"
    raise SystemExit("the block did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000)
    n = parser.parse_args().packets
    proc, address = _serve()
    try:
        for coalesce in (1, 64):
            for label, options in [("retries=0", {"retries": 0}), ("retries=3", {})] * 2:
                with BlockClient(address, **options) as client:
                    list(client.process([{"i": i} for i in range(500)], coalesce=coalesce))  # warm-up
                    start = time.process_time()
                    got = sum(1 for _ in client.process(({"i": i} for i in range(n)), coalesce=coalesce))
                    cpu = time.process_time() - start
                assert got == n, (got, n)
                print(f"coalesce={coalesce:<3} {label}: {cpu / n * 1e6:6.1f} us client CPU per packet")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
