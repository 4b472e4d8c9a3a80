"""Blocks that say which instance answered, for the client's failover and retry tests."""

from __future__ import annotations

import threading
import time

from aios_grpc import *
from aios_grpc.errors import Unavailable


class WhoBlock:
    """Outputs ``{"echo": data, "instance": <instance_id>}``.

    ``{"sleep": s}`` sleeps first; ``{"busy": n}`` answers a retryable UNAVAILABLE the
    first ``n`` times this instance sees that (session_id, seq_no); ``{"busy_on": id}``
    answers it every time on instance ``id``.
    """

    def __init__(self, context):
        self.instance = context.instance_id
        self.tries: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def on_preprocess(self, packet):
        data = json.loads(packet.data) if packet.data else {}
        key = (packet.session_id, packet.seq_no)
        return True, [PreProcessResult(packet=packet, extra_data={"input": data, "key": key})]

    def on_data(self, entry):
        data = entry.extra_data["input"]
        if isinstance(data, dict):
            if "sleep" in data:
                time.sleep(data["sleep"])
            if data.get("busy_on") == self.instance:
                raise Unavailable(f"{self.instance} busy")
            if "busy" in data:
                with self.lock:
                    seen = self.tries.get(entry.extra_data["key"], 0)
                    self.tries[entry.extra_data["key"]] = seen + 1
                if seen < data["busy"]:
                    raise Unavailable(f"{self.instance} busy")
        return True, OnDataResult(output={"echo": data, "instance": self.instance})

    def management(self, action, data):
        return {"instance": self.instance, "action": action, "data": data}

    def on_update(self, params):
        return True, params
