"""Small blocks that exercise the runtime's paths."""

from __future__ import annotations

import asyncio
import threading
import time

from aios_grpc import *


class EchoBlock:
    """Outputs its input; {"fail": "msg"} returns (False, msg); {"raise": "msg"} raises;
    {"sleep": s} sleeps first; {"none": true} returns (True, None)."""

    def __init__(self, context):
        self.context = context
        self.calls = 0
        self.lock = threading.Lock()

    def on_preprocess(self, packet):
        data = json.loads(packet.data) if packet.data else {}
        if isinstance(data, dict) and "reject" in data:
            return False, data["reject"]
        return True, [PreProcessResult(packet=packet, extra_data={"input": data})]

    def on_data(self, entry):
        data = entry.extra_data["input"]
        with self.lock:
            self.calls += 1
        if isinstance(data, dict):
            if "sleep" in data:
                time.sleep(data["sleep"])
            if "fail" in data:
                return False, data["fail"]
            if "raise" in data:
                raise ValueError(data["raise"])
            if data.get("none"):
                return True, None
        return True, OnDataResult(output={"echo": data})

    def on_update(self, params):
        if "bad" in params:
            return False, "parameter 'bad' is not allowed"
        return True, params

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        if action == "calls":
            return {"calls": self.calls}
        if action == "boom":
            raise RuntimeError("management exploded")
        raise UnknownAction(f"unknown action {action!r}")


class StreamingBlock:
    """on_data is a generator: yields one output per token of data["text"]."""

    def __init__(self, context):
        pass

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=json.loads(packet.data))]

    def on_data(self, entry):
        for token in entry.extra_data["text"].split():
            yield True, OnDataResult(output={"token": token})


class AsyncBlock:
    """async def methods on the event loop."""

    def __init__(self, context):
        pass

    async def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=json.loads(packet.data))]

    async def on_data(self, entry):
        await asyncio.sleep(entry.extra_data.get("sleep", 0))
        return True, OnDataResult(output={"async": entry.extra_data})


class SlowInitBlock:
    """__init__ takes a while; health must say NOT_SERVING meanwhile."""

    def __init__(self, context):
        time.sleep(float(context.block_init_parameters.get("init_s", 1.0)))

    def on_data(self, entry):
        return True, OnDataResult(output={"ok": True})
