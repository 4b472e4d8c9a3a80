"""Blocks for the scheduler tests: batching, muxing, slow and loop-blocking blocks."""

from __future__ import annotations

import threading

from aios_grpc import *


class BatchBlock:
    """on_batch over TimeBasedBatcher(n, t) from the init parameters.

    Per entry: {"fail": msg} -> (False, msg); {"raise": true} makes the whole call
    raise; {"short": true} makes it return one result too few; {"sleep": s} sleeps
    s seconds in the call (once per call, the longest asked). Management "stats"
    returns the sizes of the calls and the most calls seen running at once.
    """

    def __init__(self, context):
        params = context.block_init_parameters
        self.n = int(params.get("n", 8))
        self.t = float(params.get("t", 0.0))
        self.kind = params.get("kind", "time")
        self.sizes = []
        self.seen = []
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def get_batcher(self):
        if self.kind == "plain":
            return Batcher(N=self.n)
        return TimeBasedBatcher(N=self.n, T=self.t)

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=packet.json())]

    def on_batch(self, entries):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.sizes.append(len(entries))
            self.seen.extend(e.extra_data.get("i") for e in entries)
        try:
            inputs = [e.extra_data for e in entries]
            pause = max((float(d.get("sleep", 0)) for d in inputs), default=0.0)
            if pause:
                time.sleep(pause)
            if any(d.get("raise") for d in inputs):
                raise RuntimeError("batch exploded")
            results = []
            for d in inputs:
                if "fail" in d:
                    results.append((False, d["fail"]))
                else:
                    results.append((True, OnDataResult(output={"i": d.get("i"), "size": len(entries)})))
            if any(d.get("short") for d in inputs):
                results.pop()
            return results
        finally:
            with self.lock:
                self.running -= 1

    def management(self, action, data):
        if action == "stats":
            with self.lock:
                return {"sizes": list(self.sizes), "max_running": self.max_running, "seen": list(self.seen)}
        raise UnknownAction(action)


class AsyncBatchBlock(BatchBlock):
    """The same with ``async def on_batch``."""

    async def on_batch(self, entries):
        return BatchBlock.on_batch(self, entries)


class MuxBlock:
    """Muxer(2) with the timeout and bound from the init parameters; outputs what it merged."""

    def __init__(self, context):
        params = context.block_init_parameters
        self.muxer = Muxer(
            N=int(params.get("n", 2)),
            timeout_s=params.get("timeout_s"),
            max_open_groups=params.get("max_open_groups"),
        )

    def get_muxer(self):
        return self.muxer

    def on_preprocess(self, packet):
        data = packet.data
        if isinstance(data, str):
            data = json.loads(data)
        extra = {"inputs": data["inputs"], "files": [f.file_data.decode() for f in packet.files]}
        return True, [PreProcessResult(packet=packet, extra_data=extra)]

    def on_data(self, entry):
        return True, OnDataResult(output=entry.extra_data)


class SeedMuxerAndBatcherBlock:
    """The seed's BlockWithMuxerAndBatcher: a Batcher(4) used by hand inside on_data."""

    def __init__(self, context):
        self.threshold = context.block_init_parameters.get("threshold", 0.5)
        self.batcher = Batcher(N=4)

    def on_preprocess(self, packet):
        data = packet.data
        if isinstance(data, str):
            data = json.loads(data)
        if "inputs" in data:
            return True, [PreProcessResult(packet=packet, extra_data={"input": x}) for x in data["inputs"]]
        return True, [PreProcessResult(packet=packet, extra_data={"input": data})]

    def on_data(self, entry):
        value = entry.extra_data["input"].get("value", 0)
        packet = entry.packet
        packet.data = json.dumps({"value": value, "passed": value > self.threshold})
        batch = self.batcher.add_to_batch(packet)
        if batch:
            return True, OnDataResult(output={"batch": [json.loads(p.data) for p in batch]})
        return True, None


class SlowBlock:
    """Sleeps ``delay`` seconds per packet and counts what it ran."""

    def __init__(self, context):
        self.delay = float(context.block_init_parameters.get("delay", 0.002))
        self.calls = 0
        self.lock = threading.Lock()

    def on_data(self, entry):
        time.sleep(self.delay)
        with self.lock:
            self.calls += 1
        return True, OnDataResult(output={"n": len(entry.packet.data)})

    def management(self, action, data):
        return {"calls": self.calls}


class LoopBlockingBlock:
    """``async def on_data`` that makes a blocking call: what the watchdog is for."""

    def __init__(self, context):
        pass

    async def on_data(self, entry):
        time.sleep(0.4)  # the blocking call the watchdog must point at
        return True, OnDataResult(output={"ok": True})
