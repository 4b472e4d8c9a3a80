"""Shared by the batching, coalescing and latency benchmarks: start a served block, percentiles."""

from __future__ import annotations

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
sys.path[:0] = [str(ROOT / "generated"), str(ROOT / "clients" / "python"), str(ROOT)]


def start_block(ref: str, params: dict[str, Any] | None = None, **env: str) -> tuple[subprocess.Popen[str], str]:
    """``aios-grpc serve ref`` in a subprocess; returns it and its ``host:port``."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "aios_grpc", "serve", ref],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
        if address and "is ready" in line:
            # Keep draining its output so that a chatty server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, address
    proc.kill()
    raise SystemExit(f"server {ref} did not start:\n{''.join(seen[-20:])}")


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
