"""For ``batching_torch.py``: the example's block methods behind a bare ``grpc.aio`` servicer.

Usage (the benchmark starts it): .venv/bin/python bench/_raw_torch.py

No aios-grpc runtime: no scheduler, validation, ordering, bounds, deadlines, telemetry
or drain. Each Process stream appends the packets it reads to one shared list; one
task takes up to 32 of them whenever the previous batch is done (the same rule as the
runtime's: a batch goes as soon as a run slot is free), calls the example's
``on_preprocess`` per packet and ``on_batch`` once, in one thread, and hands each
stream its results in one response. What this server reaches on a machine is what a
plain Python gRPC server gets there with this client and this model, so the
runtime's served rate divided by this one is what the runtime's own work costs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT)]

import grpc  # noqa: E402
from aios_block_stubs.v1 import block_pb2 as pb  # noqa: E402
from aios_block_stubs.v1 import block_pb2_grpc as pb_grpc  # noqa: E402

from aios_grpc.packet import AIOSPacket, FileInfo  # noqa: E402
from aios_grpc.testing import TestContext  # noqa: E402
from examples.torch_classifier import TorchClassifier  # noqa: E402

BATCH = 32

Item = tuple[asyncio.Queue[Any], AIOSPacket]


class _RawBatching(pb_grpc.BlockServiceServicer):
    def __init__(self, block: TorchClassifier) -> None:
        self.block = block
        self.pending: list[Item] = []
        self.queued = asyncio.Event()
        self.pool = ThreadPoolExecutor(1)  # one batch at a time, always on the same thread

    def _run(self, batch: list[Item]) -> list[str]:
        entries = []
        for _, packet in batch:
            ok, pre = self.block.on_preprocess(packet)
            if not ok:
                raise ValueError(pre)
            entries.extend(pre)
        outs = []
        for ok, result in self.block.on_batch(entries):
            if not ok:
                raise ValueError(result)
            out = result.output
            outs.append(out if isinstance(out, str) else json.dumps(out))
        return outs

    async def batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.queued.clear()
                await self.queued.wait()
            batch, self.pending[:BATCH] = self.pending[:BATCH], []
            outs = await loop.run_in_executor(self.pool, self._run, batch)
            by_stream: dict[int, tuple[asyncio.Queue[Any], list[tuple[AIOSPacket, str]]]] = {}
            for (box, packet), out in zip(batch, outs, strict=True):
                by_stream.setdefault(id(box), (box, []))[1].append((packet, out))
            for box, items in by_stream.values():
                box.put_nowait(items)

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessRequest], context: Any
    ) -> AsyncIterator[pb.ProcessResponse]:
        box: asyncio.Queue[Any] = asyncio.Queue()
        read = 0
        reading = True

        async def reader() -> None:
            nonlocal read, reading
            async for request in request_iterator:
                for msg in request.packets or [request.packet]:
                    files = [FileInfo(f.metadata, f.file_data) for f in msg.files]
                    self.pending.append((box, AIOSPacket(msg.session_id, msg.seq_no, msg.data, files=files)))
                    read += 1
                self.queued.set()
            reading = False
            box.put_nowait(None)

        task = asyncio.create_task(reader())
        answered = 0
        try:
            while reading or answered < read:
                items = await box.get()
                if items is None:
                    continue
                response = pb.ProcessResponse()
                for packet, out in items:
                    result = response.results.add()
                    result.session_id = packet.session_id
                    result.seq_no = packet.seq_no
                    result.kind = pb.RESULT_KIND_OK
                    result.output.session_id = packet.session_id
                    result.output.seq_no = packet.seq_no
                    result.output.data = out
                answered += len(items)
                yield response
        finally:
            task.cancel()


async def serve() -> None:
    """Serve on 127.0.0.1 (a free port) until killed; prints the address like ``aios-grpc serve``."""
    context = TestContext()
    context.block_init_parameters = json.loads(os.environ.get("AIOS_BLOCK_INIT_PARAMETERS", "{}"))
    servicer = _RawBatching(TorchClassifier(context))
    # What aios-grpc does once a block is ready (AIOS_GC_FREEZE), so that both sides
    # pay the same for the garbage collector.
    gc.collect()
    gc.freeze()
    batching = asyncio.create_task(servicer.batches())
    server = grpc.aio.server()
    pb_grpc.add_BlockServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}; block is ready", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        batching.cancel()


if __name__ == "__main__":
    asyncio.run(serve())
