"""Blocks for graph and Redis tests."""

from __future__ import annotations

import os
import time

from aios_grpc import *


class StageBlock:
    """Appends its block id to data["path"]; {"sleep": s} sleeps; {"fail": msg} fails."""

    def __init__(self, context):
        self.block_id = context.block_id
        self.context = context
        self.params = dict(context.block_init_parameters)

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=json.loads(packet.data or "{}"))]

    def on_data(self, entry):
        data = dict(entry.extra_data)
        delay = data.get("sleep", self.params.get("sleep", 0))
        if delay:
            time.sleep(delay)
        if "fail" in data:
            return False, data["fail"]
        data["path"] = [*data.get("path", []), self.block_id]
        data["pid"] = os.getpid()
        return True, OnDataResult(output=data)

    def on_update(self, params):
        self.params.update(params)
        return True, params

    def management(self, action, data):
        if action == "params":
            return self.params
        raise UnknownAction(action)


class JoinBlock:
    """Muxes two inputs with the same (session_id, seq_no) and lists the branches they took."""

    def __init__(self, context):
        self.block_id = context.block_id

    def get_muxer(self):
        return Muxer(2, timeout_s=20.0)

    def on_preprocess(self, packet):
        data = packet.data if isinstance(packet.data, dict) else json.loads(packet.data)
        return True, [PreProcessResult(packet=packet, extra_data=data)]

    def on_data(self, entry):
        inputs = entry.extra_data.get("inputs", [entry.extra_data])
        paths = sorted("/".join(i.get("path", [])) for i in inputs)
        return True, OnDataResult(output={"joined": paths, "n": len(inputs), "at": self.block_id})


class FlakyBlock:
    """Answers UNAVAILABLE (retryable) the first ``fail_times`` times it sees a session."""

    def __init__(self, context):
        self.fail_times = int(context.block_init_parameters.get("fail_times", 2))
        self.seen = {}
        self.calls = 0

    def on_data(self, entry):
        sid = entry.packet.session_id
        self.calls += 1
        self.seen[sid] = self.seen.get(sid, 0) + 1
        if self.seen[sid] <= self.fail_times:
            raise Unavailable(f"warming up ({self.seen[sid]})")
        return True, OnDataResult(output={"attempts": self.seen[sid]})

    def management(self, action, data):
        return {"calls": self.calls}
