"""A block whose outputs carry a status that picks the next step of a graph."""

from __future__ import annotations

from aios_grpc import *


class Classify:
    """Outputs ``status``: "hot" above 50, "skip" for 0, else "cold"; and its block id in ``path``."""

    def __init__(self, context):
        self.block_id = context.block_id

    def on_data(self, entry):
        value = entry.packet.json()["value"]
        status = "skip" if value == 0 else "hot" if value > 50 else "cold"
        return True, OnDataResult(output={"value": value, "status": status, "path": [self.block_id]})
