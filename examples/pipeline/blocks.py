"""The blocks of the example pipeline: three stages and a join that muxes two branches."""

from aios_grpc import *


class Stage:
    """Adds its block id to the packet's ``path`` and a score of its own."""

    def __init__(self, context):
        self.block_id = context.block_id

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=json.loads(packet.data or "{}"))]

    def on_data(self, entry):
        data = dict(entry.extra_data)
        data["path"] = [*data.get("path", []), self.block_id]
        data[f"score_{self.block_id}"] = len(data["path"]) * 0.5
        return True, OnDataResult(output=data)


class Join:
    """Waits for both branches of a session (``Muxer(2)``) and combines their scores."""

    def __init__(self, context):
        self.block_id = context.block_id

    def get_muxer(self):
        return Muxer(2)

    def on_preprocess(self, packet):
        data = packet.data if isinstance(packet.data, dict) else json.loads(packet.data)
        return True, [PreProcessResult(packet=packet, extra_data=data)]

    def on_data(self, entry):
        inputs = entry.extra_data["inputs"]
        scores = {k: v for item in inputs for k, v in item.items() if k.startswith("score_")}
        branches = sorted("/".join(item["path"]) for item in inputs)
        return True, OnDataResult(output={"branches": branches, "scores": scores})
