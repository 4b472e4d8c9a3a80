"""The SDK's own work per packet on the Process stream path, without gRPC I/O.

Usage: flock /tmp/aios-bench.lock .venv/bin/python bench/sdk_path.py [--packets N] [--instructions]

It feeds ``BlockServicer.Process`` ready-made ``ProcessRequest`` messages of one
session and reads the responses it yields, with the trivial block of
``stream_throughput.py`` and the default telemetry (metrics on, no endpoint). The
block's chunks run on the event loop instead of the thread pool, so that what is
measured is the SDK's code (conversions, scheduler, ordering, telemetry, response
building), not thread hand-offs, whose cost depends on the machine's load.

- default: CPU microseconds per packet (median of ``--rounds`` runs); these swing
  with whatever else runs on the machine.
- ``--instructions``: instructions per packet counted by valgrind's callgrind, the
  difference between a run of ``--packets`` and one of a quarter as many, so that
  start-up cancels out. Deterministic to about 0.5%, so a change of a few percent
  shows; needs ``valgrind`` and takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT)]


class _Context:
    """The two things ``Process`` asks of a gRPC servicer context."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()


class BatchedBlock:
    """The trivial block over ``on_batch`` with ``Batcher(32)``: the batch path's own cost shows most."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def get_batcher(self) -> Any:
        from aios_grpc.grouping import Batcher

        return Batcher(32)

    def on_batch(self, entries: list[Any]) -> list[Any]:
        from aios_grpc import OnDataResult

        return [(True, OnDataResult(output=entry.packet.data)) for entry in entries]


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once on the caller's thread (a done future back)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


async def _run(packets: int, block: str = "plain") -> float:
    """CPU seconds for ``packets`` packets through one Process stream of ``block`` ("plain" or "batched").

    The stack is built as ``aios_grpc.server.BlockServer`` builds it (settings, context,
    telemetry, ``GraphRouter.from_settings``, adapter built with telemetry.wrap, scheduler with the
    router); only the chunks of a plain block run on the loop instead of the thread pool.
    """
    os.environ.setdefault("AIOS_METRICS_PORT", "-1")
    # The loop watchdog ticks by the clock, not per packet: under callgrind (about 50x
    # slower, more on a loaded machine) its ticks would add a load-dependent share.
    os.environ.setdefault("AIOS_LOOP_BLOCK_THRESHOLD_S", "0")
    from _harness import TrivialBlock

    from aios_grpc._pb import pb
    from aios_grpc.context import Context
    from aios_grpc.routing import GraphRouter
    from aios_grpc.runtime import Scheduler, batch_stage
    from aios_grpc.runtime import scheduler as core
    from aios_grpc.runtime.adapter import BlockAdapter
    from aios_grpc.service.servicer import BlockServicer
    from aios_grpc.settings import load_settings
    from aios_grpc.telemetry import make_telemetry

    async def inline_run(self: Any, jobs: list[Any]) -> None:
        # Scheduler._run without the thread hand-off: the same chunk run and answers.
        now = time.monotonic()
        self.telemetry.stages_done(jobs, "queue", [now - job.received for job in jobs])
        self.answer_outcomes(jobs, self._run_chunk_sync(jobs))

    core.Scheduler._run = inline_run  # type: ignore[method-assign]
    # A batch runs on the loop as well (an executor that runs each call at once): the
    # batches are then formed by the loop's order alone, so a batched count does not
    # depend on when a thread happened to finish (with threads it varied by about 30%
    # from run to run under load, batch sizes following the timing).
    setattr(batch_stage, "ThreadPoolExecutor", _InlineExecutor)  # noqa: B010 (a module attribute)
    settings = load_settings()
    context = Context.from_settings(settings)
    telemetry = make_telemetry(settings)
    router = GraphRouter.from_settings(settings)
    block_class = BatchedBlock if block == "batched" else TrivialBlock
    adapter = BlockAdapter(block_class(context), wrap=telemetry.wrap)
    scheduler = Scheduler(adapter, settings, telemetry=telemetry, router=router, executor=_InlineExecutor())  # type: ignore[arg-type]
    await scheduler.configure()
    await scheduler.start()
    servicer = BlockServicer(settings.stream_max_in_flight)
    servicer.attach(scheduler, None)  # type: ignore[arg-type]
    requests = [
        pb.ProcessRequest(packet=pb.Packet(session_id="s", seq_no=i, data=json.dumps({"i": i, "text": "hello"})))
        for i in range(packets)
    ]

    # The plain block reads one request per loop turn, as gRPC hands them over; the
    # batched block's requests come in bursts of a batch (as when the caller is ahead of
    # the block), so its batches are full and the count shows the batch path itself.
    burst = 32 if block == "batched" else 1

    async def feed() -> AsyncIterator[Any]:
        for i, request in enumerate(requests):
            if i % burst == 0:
                await asyncio.sleep(0)
            yield request

    start = time.process_time()
    answered = 0
    async for _ in servicer.Process(feed(), _Context()):  # type: ignore[arg-type]
        answered += 1
    cpu = time.process_time() - start
    await scheduler.stop()
    if answered != packets:
        raise SystemExit(f"{answered} answers for {packets} packets")
    return cpu


def _instructions(packets: int, block: str, out_file: str = "/dev/null") -> int:
    """Instructions callgrind counts for one whole run of this script with ``packets`` packets of ``block``."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            __file__,
            "--packets",
            str(packets),
            "--block",
            block,
            "--rounds",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    found = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if not found:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--block", choices=["plain", "batched"], default="plain", help="block of a timed run")
    parser.add_argument("--json", metavar="FILE", help="with --instructions: write {plain, batched} per packet")
    parser.add_argument("--callgrind-out", metavar="PREFIX", help="with --instructions: keep the callgrind files")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind")
        many = min(args.packets, 4000)  # callgrind runs ~50x slower
        few = many // 4
        figures = {}
        for block in ("plain", "batched"):
            keep = f"{args.callgrind_out}.{block}.{{}}" if args.callgrind_out else "/dev/null"
            big = _instructions(many, block, keep.format(many))
            small = _instructions(few, block, keep.format(few))
            figures[block] = round((big - small) / (many - few))
            print(
                f"SDK path, {block} block: {figures[block]:,} instructions per packet "
                f"(callgrind, {few} vs {many} packets)"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(figures) + "\n")
        return
    cpu = [asyncio.run(_run(args.packets, args.block)) / args.packets * 1e6 for _ in range(args.rounds)]
    if not args.quiet:
        print(
            f"SDK path, {args.block} block: {statistics.median(cpu):.1f} CPU us per packet "
            f"(median of {args.rounds} runs of {args.packets} packets; load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
