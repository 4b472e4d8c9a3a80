"""Blocks for the edge-case tests (tests/service/test_edges_*.py): big outputs, slow packets."""

from __future__ import annotations

import json
import time

from aios_grpc import *


class SizedBlock:
    """Outputs ``{"blob": "x" * size}`` for ``{"size": N}`` (after ``{"sleep": s}``); else echoes."""

    def __init__(self, context):
        self.context = context

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data={"input": packet.json()})]

    def on_data(self, entry):
        data = entry.extra_data["input"]
        if isinstance(data, dict):
            if "sleep" in data:
                time.sleep(data["sleep"])
            if "size" in data:
                return True, OnDataResult(output={"blob": "x" * data["size"]})
        return True, OnDataResult(output={"echo": data})

    def on_update(self, params):
        return True, params

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        if action == "echo":
            return data
        if action == "size":
            return {"blob": "x" * int(data["size"])}
        raise UnknownAction(f"unknown action {action!r}")


class BigOutputBlock:
    """Every packet's output is ``AIOS_TEST_OUTPUT_BYTES`` (default 100 KB) of text."""

    def __init__(self, context):
        import os

        self.size = int(os.environ.get("AIOS_TEST_OUTPUT_BYTES", "100000"))

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet)]

    def on_data(self, entry):
        return True, OnDataResult(output=json.dumps({"blob": "y" * self.size}))

    def health(self):
        return {"status": "healthy"}
