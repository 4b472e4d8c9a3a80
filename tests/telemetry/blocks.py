"""Blocks for the observability tests."""

from __future__ import annotations

import asyncio
import threading
import time

from aios_grpc_client import BlockClient, make_packet
from opentelemetry import trace

from aios_grpc import *


class MeteredBlock:
    """Registers its own metrics (the seed's AIOSMetrics API) and updates them per packet."""

    def __init__(self, context):
        self.metrics = context.metrics
        self.metrics.register_counter("images_processed_total", "Images processed", ["camera"])
        self.metrics.register_gauge("model_temperature", "A gauge set per packet")
        self.metrics.register_histogram("objects_per_image", "Objects found", buckets=[0, 1, 2, 5, 10])

    def on_data(self, entry):
        data = entry.packet.json()
        self.metrics.increment_counter("images_processed_total", labels={"camera": data["camera"]})
        self.metrics.set_gauge("model_temperature", data["objects"] * 10)
        self.metrics.observe_histogram("objects_per_image", data["objects"])
        return True, OnDataResult(output={"ok": True})


class ForwardBlock:
    """Calls the block at block_init_data["next"] with the packet's headers (a hand-made chain)."""

    def __init__(self, context):
        self.client = BlockClient(context.block_init_data["next"])
        self.lock = threading.Lock()

    def on_data(self, entry):
        packet = entry.packet
        forwarded = make_packet(
            packet.json(), session_id=packet.session_id, seq_no=packet.seq_no, headers=packet.headers
        )
        with self.lock:
            results = [r for r in self.client.process([forwarded], timeout=10) if r.terminal]
        return True, OnDataResult(output={"downstream": results[0].data})


class SwitchableHealth:
    """health() answers what management("health", {...}) told it: healthy, a status, or raise."""

    def __init__(self, context):
        time.sleep(float(context.block_init_parameters.get("init_s", 0)))
        self.mode = {"status": "healthy"}

    def on_data(self, entry):
        return True, OnDataResult(output={"ok": True})

    def health(self):
        if self.mode.get("raise"):
            raise RuntimeError(self.mode["raise"])
        return dict(self.mode)

    def management(self, action, data):
        self.mode = dict(data)
        return {"mode": self.mode}


class StallBlock:
    """on_data waits on an event that the test sets (a stuck model)."""

    release = threading.Event()

    def __init__(self, context):
        pass

    def on_data(self, entry):
        StallBlock.release.wait(20)
        return True, OnDataResult(output={"ok": True})


def current_span_id() -> str:
    """The span id of the OpenTelemetry span that is current here (block code's spans would nest under it)."""
    return trace.format_span_id(trace.get_current_span().get_span_context().span_id)


class SlowStreamBlock:
    """on_data is a generator: data["n"] outputs, data["pause"] seconds before each.

    Each output names the span current while it was made. With data["bad_at"] = k, the
    k-th item (from 0) has a wrong shape, so the scheduler stops reading there.
    """

    def __init__(self, context):
        pass

    def on_data(self, entry):
        data = entry.packet.json()
        for i in range(data["n"]):
            time.sleep(data["pause"])
            if i == data.get("bad_at"):
                yield "not a result"
            yield True, OnDataResult(output={"i": i, "span": current_span_id()})


class AsyncSlowStreamBlock:
    """on_data is an async generator: data["n"] outputs, data["pause"] seconds before each."""

    def __init__(self, context):
        pass

    async def on_data(self, entry):
        data = entry.packet.json()
        for i in range(data["n"]):
            await asyncio.sleep(data["pause"])
            yield True, OnDataResult(output={"i": i, "span": current_span_id()})
