"""Batched torch inference for ``on_batch`` blocks (``pip install 'aios-grpc[torch]'``).

Only this module imports torch; the rest of the SDK imports and serves without it.

>>> from aios_grpc import OnDataResult, TimeBasedBatcher
>>> from aios_grpc.torch import TorchModel
>>> class Classifier:                                    # doctest: +SKIP
...     def __init__(self, context):
...         self.model = TorchModel(build_my_module(), context, half=True)
...     def get_batcher(self):
...         return TimeBasedBatcher(N=32, T=0.005)
...     def on_batch(self, entries):
...         outputs = self.model.run([e.extra_data["x"] for e in entries])
...         return [(True, OnDataResult(output={"y": y})) for y in outputs]

``TorchModel`` picks the device from ``context.allocation_info["gpus"]`` (``cuda:i``
when CUDA is available, else the CPU; the choice is logged), stacks a batch of inputs
into one tensor (``collate``), runs the module under ``torch.inference_mode()`` and
cuts the output back into one plain Python value per entry (``split``). Half precision
is used only on a GPU.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("aios_grpc.torch needs torch: pip install 'aios-grpc[torch]'") from exc

log = logging.getLogger("aios_grpc.torch")


def _gpu_index(gpu: Any) -> int | None:
    if isinstance(gpu, bool):
        return None
    if isinstance(gpu, int):
        return gpu
    if isinstance(gpu, Mapping):
        gpu = gpu.get("index", gpu.get("id"))
        return _gpu_index(gpu) if gpu is not None else None
    match = re.fullmatch(r"(?:cuda:|gpu)?(\d+)", str(gpu).strip().lower())
    return int(match.group(1)) if match else None


def select_device(source: Any = None) -> torch.device:
    """The device to run on: ``cuda:i`` for the first allocated GPU when usable, else CPU.

    ``source`` is a block ``Context`` (its ``allocation_info["gpus"]`` is read), or
    the list of GPUs itself (``[0]``, ``["1"]``, ``["cuda:1"]``, ``[{"index": 1}]``).
    """
    if source is None:
        gpus: Any = []
    elif isinstance(source, list | tuple):
        gpus = list(source)
    else:
        info = getattr(source, "allocation_info", None) or {}
        gpus = info.get("gpus") or []
    if not gpus:
        log.info("torch device: cpu (no GPU allocated)")
        return torch.device("cpu")
    index = _gpu_index(gpus[0])
    if index is None:
        log.warning("torch device: cpu (cannot read a GPU index from %r)", gpus[0])
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log.warning("torch device: cpu (GPU %s allocated but CUDA is not available)", gpus[0])
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if index >= count:
        log.warning("torch device: cpu (GPU %d allocated but only %d CUDA devices are visible)", index, count)
        return torch.device("cpu")
    log.info("torch device: cuda:%d", index)
    return torch.device(f"cuda:{index}")


def collate(
    inputs: Sequence[Any], *, dtype: torch.dtype | None = torch.float32, device: torch.device | str | None = None
) -> Any:
    """Stack one input per entry into a batch.

    Each input is a number list (nested for more dimensions), a tensor, an array, or
    a dict of those (collated key by key into a dict of tensors). Every input must
    have the same shape; a mismatch raises ``ValueError`` naming the entry.
    """
    if not inputs:
        raise ValueError("collate needs at least one input")
    first = inputs[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for i, item in enumerate(inputs):
            if not isinstance(item, Mapping) or list(item) != keys:
                raise ValueError(
                    f"entry {i} has keys {list(item) if isinstance(item, Mapping) else item!r}, entry 0 has {keys}"
                )
        return {k: collate([item[k] for item in inputs], dtype=dtype, device=device) for k in keys}
    tensors = [torch.as_tensor(item, dtype=dtype) for item in inputs]
    shape = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != shape:
            raise ValueError(f"entry {i} has shape {tuple(t.shape)}, entry 0 has {tuple(shape)}")
    batch = torch.stack(tensors)
    return batch.to(device) if device is not None else batch


def split(output: Any, n: int, *, decimals: int | None = None) -> list[Any]:
    """Cut a batched output (a tensor, or a tuple/list/dict of them) into ``n`` plain values.

    ``decimals`` rounds floating-point values to that many decimal places, in float64,
    so that their JSON text is short: a float32 value turned into a Python float
    otherwise prints with up to 17 digits (``0.12345670163631439``), and writing those
    is most of the cost of a small output; with ``decimals=6`` it is ``0.123457``.
    Values above about ``1e302 / 10**decimals`` (never a float32) overflow to infinity.
    """
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != n:
            raise ValueError(f"model output has shape {tuple(output.shape)}; expected {n} rows, one per entry")
        values = output.detach()
        if values.is_floating_point():
            if decimals is not None:
                # One op: in a busy server each tensor op costs tens of microseconds
                # (cold caches between batches), more than the digits it would save.
                values = torch.round(values.to(torch.float64), decimals=decimals)
            elif values.dtype != torch.float32:
                values = values.float()
        rows: list[Any] = values.cpu().tolist()
        return rows
    if isinstance(output, Mapping):
        parts = {k: split(v, n, decimals=decimals) for k, v in output.items()}
        return [{k: parts[k][i] for k in parts} for i in range(n)]
    if isinstance(output, tuple | list):
        parts_list = [split(v, n, decimals=decimals) for v in output]
        return [tuple(p[i] for p in parts_list) for i in range(n)]
    raise TypeError(f"cannot split a model output of type {type(output).__name__}")


class TorchModel:
    """A module on its device, run on whole batches under ``torch.inference_mode()``."""

    def __init__(
        self,
        module: torch.nn.Module,
        context: Any = None,
        *,
        device: torch.device | str | None = None,
        half: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device) if device is not None else select_device(context)
        self.half = half and self.device.type == "cuda"
        if half and not self.half:
            log.info("half precision asked but the device is %s: running in float32", self.device)
        self.dtype = torch.float16 if self.half else dtype
        module = module.to(self.device)
        self.module = (module.half() if self.half else module).eval()

    def __call__(self, batch: Any) -> Any:
        """The module's output for an already collated batch (moved to the device here)."""
        with torch.inference_mode():
            if isinstance(batch, Mapping):
                return self.module(**{k: self._to(v) for k, v in batch.items()})
            return self.module(self._to(batch))

    def _to(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point():
            return tensor.to(self.device, dtype=self.dtype, non_blocking=True)
        return tensor.to(self.device, non_blocking=True)

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        """Collate ``inputs`` (one per entry), run the module once, split: one output per entry."""
        batch = collate(inputs, dtype=torch.float32)
        return split(self(batch), len(inputs))


__all__ = ["TorchModel", "collate", "select_device", "split"]
