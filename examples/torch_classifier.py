"""A batched torch classifier block: ``on_batch`` with a ``TimeBasedBatcher``.

The model is a small MLP (256 -> 1024 -> 1024 -> 10) with RANDOM weights from a fixed
seed: it classifies nothing meaningful; it stands in for a real model so that the
serving path (batching, device choice, inference mode) can be run and measured.

Input: packet data ``{"x": [256 numbers]}``, or one attached file holding the 256 numbers
as raw little-endian float32 (1 KiB; metadata ``{"dtype": "float32"}``), which skips
parsing 256 numbers from JSON per packet. Output: ``{"label": int, "logits": [10 numbers]}``,
the logits rounded to 6 decimal places (``split(..., decimals=6)``). A float32 value read
into Python prints with up to 17 digits (``0.12345670163631439``), and writing those is
most of the cost of this small output: rounded, its JSON is about half as long, and
``split`` plus the encoding take 49k instead of 90k instructions per packet (callgrind,
batches of 32).

Run it::

    aios-grpc serve examples/torch_classifier.py:TorchClassifier
    # or: python examples/torch_classifier.py

Init parameters (``AIOS_BLOCK_INIT_PARAMETERS``): ``batch_n`` (32), ``batch_t`` (0.005 s),
``half`` (false; used on a GPU only), ``threads`` (torch intra-op threads, default torch's).
"""

from __future__ import annotations

import torch

from aios_grpc import Block, OnDataResult, PreProcessResult, TimeBasedBatcher
from aios_grpc.torch import TorchModel, collate, split

IN_FEATURES = 256
CLASSES = 10


def build_mlp(seed: int = 0) -> torch.nn.Module:
    """The example's MLP with random weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(IN_FEATURES, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, CLASSES),
    )


class TorchClassifier:
    """Serves ``build_mlp()`` on the allocated GPU (or the CPU), one forward pass per batch."""

    def __init__(self, context):
        params = context.block_init_parameters
        if params.get("threads"):
            torch.set_num_threads(int(params["threads"]))
        self.batch_n = int(params.get("batch_n", 32))
        self.batch_t = float(params.get("batch_t", 0.005))
        self.model = TorchModel(build_mlp(), context, half=bool(params.get("half", False)))

    def get_batcher(self):
        return TimeBasedBatcher(N=self.batch_n, T=self.batch_t)

    def on_preprocess(self, packet):
        if packet.files:
            raw = packet.files[0].file_data
            if len(raw) != 4 * IN_FEATURES:
                return False, f"the file must hold {IN_FEATURES} float32 values, got {len(raw)} bytes"
            # Kept as bytes: on_batch decodes the whole batch's bytes in one call.
            return True, [PreProcessResult(packet=packet, extra_data={"x": raw})]
        data = packet.json()
        x = data.get("x") if isinstance(data, dict) else None
        if not isinstance(x, list) or len(x) != IN_FEATURES:
            return False, f'data must be {{"x": [{IN_FEATURES} numbers]}} or carry one float32 file'
        return True, [PreProcessResult(packet=packet, extra_data={"x": x})]

    def on_batch(self, entries):
        xs = [e.extra_data["x"] for e in entries]
        if all(isinstance(x, bytes) for x in xs):
            # One tensor over the joined bytes instead of one per entry and a stack.
            batch = torch.frombuffer(bytearray(b"".join(xs)), dtype=torch.float32).view(len(xs), IN_FEATURES)
        else:
            batch = collate(
                [torch.frombuffer(bytearray(x), dtype=torch.float32) if isinstance(x, bytes) else x for x in xs]
            )
        out = self.model(batch)
        labels = out.argmax(dim=1).tolist()
        return [
            (True, OnDataResult(output={"label": label, "logits": row}))
            for label, row in zip(labels, split(out, len(xs), decimals=6), strict=True)
        ]


if __name__ == "__main__":
    Block(TorchClassifier).run()
