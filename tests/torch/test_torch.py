"""aios_grpc.torch helpers and the served torch example, with real torch on the CPU."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

import pytest
import torch
from aios_grpc_client import BlockClient

from aios_grpc import TestContext
from aios_grpc.torch import TorchModel, collate, select_device, split
from examples.torch_classifier import TorchClassifier, build_mlp
from tests.conftest import ROOT


def test_device_is_cpu_without_gpus(caplog):
    with caplog.at_level(logging.INFO, logger="aios_grpc.torch"):
        assert select_device(TestContext()) == torch.device("cpu")
    assert "no GPU allocated" in caplog.text


def test_device_follows_the_allocated_gpu_when_cuda_is_there(monkeypatch, caplog):
    # No GPU here: only CUDA's availability is faked, the choice logic is real.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ctx = TestContext()
    ctx.allocation_info = {"gpus": ["1"], "node_id": "n", "cluster_id": "c"}
    with caplog.at_level(logging.INFO, logger="aios_grpc.torch"):
        assert select_device(ctx) == torch.device("cuda:1")
    assert select_device(["cuda:0"]) == torch.device("cuda:0")
    assert select_device([{"index": 1}]) == torch.device("cuda:1")
    assert select_device([5]) == torch.device("cpu")  # not visible
    assert "cuda:1" in caplog.text


def test_device_falls_back_to_cpu_when_cuda_is_missing(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="aios_grpc.torch"):
        assert select_device([0]) == torch.device("cpu")
    assert "CUDA is not available" in caplog.text


def test_collate_and_split_round_trip():
    batch = collate([[1, 2], [3, 4], [5, 6]])
    assert batch.shape == (3, 2) and batch.dtype == torch.float32
    assert split(batch * 2, 3) == [[2.0, 4.0], [6.0, 8.0], [10.0, 12.0]]
    both = collate([{"a": [1], "b": [[0, 1]]}, {"a": [2], "b": [[1, 0]]}])
    assert both["a"].shape == (2, 1) and both["b"].shape == (2, 1, 2)
    assert split({"y": torch.tensor([1, 2])}, 2) == [{"y": 1}, {"y": 2}]
    assert split((torch.tensor([1, 2]), torch.tensor([3, 4])), 2) == [(1, 3), (2, 4)]
    with pytest.raises(ValueError, match="entry 1 has shape"):
        collate([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="expected 3 rows"):
        split(torch.zeros(2, 4), 3)


def test_split_with_decimals_writes_short_json():
    out = torch.tensor([[0.1234567891, 2.0], [1 / 3, -7e-5]])
    assert split(out, 2) == out.tolist()  # unchanged without decimals
    assert split(out, 2, decimals=4) == [[0.1235, 2.0], [0.3333, -0.0001]]
    assert json.dumps(split(out, 2, decimals=6)[1]) == "[0.333333, -7e-05]"
    both = split({"y": out, "label": torch.tensor([1, 0])}, 2, decimals=2)
    assert both == [{"y": [0.12, 2.0], "label": 1}, {"y": [0.33, -0.0], "label": 0}]
    assert split((out,), 2, decimals=1)[0] == ([0.1, 2.0],)
    gen = torch.Generator().manual_seed(0)
    many = (torch.randn(4000, generator=gen) * 10.0 ** torch.randint(-8, 7, (4000,), generator=gen)).view(400, 10)
    rows = split(many, 400, decimals=6)
    assert torch.allclose(torch.tensor(rows, dtype=torch.float64), many.double(), rtol=0, atol=5.1e-7)
    # Each value is the float64 nearest to its rounded decimal, so it prints short.
    assert all(len(repr(v).split(".")[-1]) <= 6 for row in rows for v in row if "e" not in repr(v))
    special = torch.tensor([[0.0, -0.0, float("inf"), float("nan")]], dtype=torch.float64)
    kept = split(special, 1, decimals=3)[0]
    assert kept[:3] == [0.0, -0.0, float("inf")] and str(kept[1]) == "-0.0" and kept[3] != kept[3]
    assert special[0, 0].item() == 0.0 and special.dtype == torch.float64, "the output is left as it was"


def test_model_runs_under_inference_mode_and_matches_offline():
    module = build_mlp()
    model = TorchModel(module, TestContext(), half=True)  # half is ignored on the CPU
    assert model.device.type == "cpu" and not model.half
    xs = torch.randn(5, 256).tolist()
    out = model(collate(xs))
    assert out.is_inference()
    rows = model.run(xs)
    with torch.no_grad():
        expected = module(torch.tensor(xs))
    assert len(rows) == 5
    assert torch.allclose(torch.tensor(rows), expected, atol=1e-5)


def test_classifier_takes_float32_files_and_json_in_one_batch():
    import struct

    from aios_grpc import AIOSPacket, FileInfo

    block = TorchClassifier(TestContext())
    xs = torch.randn(4, 256).tolist()
    packets = [
        AIOSPacket(
            session_id="s", seq_no=k, data="{}", files=[FileInfo('{"dtype": "float32"}', struct.pack("<256f", *x))]
        )
        for k, x in enumerate(xs[:3])
    ]
    packets.append(AIOSPacket(session_id="s", seq_no=3, data=json.dumps({"x": xs[3]})))
    with torch.no_grad():
        expected = build_mlp()(torch.tensor(xs))
    for batch in (packets[:3], packets):  # files only (one decode for the batch), then mixed
        entries = []
        for packet in batch:
            ok, found = block.on_preprocess(packet)
            assert ok
            entries += found
        results = block.on_batch(entries)
        assert [ok for ok, _ in results] == [True] * len(batch)
        logits = torch.tensor([r.output["logits"] for _, r in results])
        assert torch.allclose(logits, expected[: len(batch)], atol=1e-5)
        assert [r.output["label"] for _, r in results] == expected[: len(batch)].argmax(dim=1).tolist()
    short = AIOSPacket(session_id="s", seq_no=9, data="{}", files=[FileInfo("{}", b"\0" * 12)])
    ok, message = block.on_preprocess(short)
    assert not ok and "256 float32 values, got 12 bytes" in message


def test_served_classifier_batches_and_answers_like_offline(serve):
    served = serve(TorchClassifier, block_init_parameters={"batch_n": 16, "batch_t": 0.002, "threads": 1})
    module = build_mlp()
    gen = torch.Generator().manual_seed(1)
    inputs = {s: torch.randn(24, 256, generator=gen).tolist() for s in range(4)}
    got: dict[int, list] = {}

    def run(stream: int) -> None:
        with BlockClient(served.address) as client:
            got[stream] = list(
                client.process([{"x": x} for x in inputs[stream]], session_id=f"s{stream}", coalesce=8, timeout=60)
            )

    threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for stream in range(4):
        results = got[stream]
        assert [r.seq_no for r in results] == list(range(1, 25))
        with torch.no_grad():
            expected = module(torch.tensor(inputs[stream]))
        logits = torch.tensor([r.data["logits"] for r in results])
        assert torch.allclose(logits, expected, atol=1e-4)
        assert [r.data["label"] for r in results] == expected.argmax(dim=1).tolist()
    sizes = served.server.scheduler.batch_stage.sizes
    assert sum(k * v for k, v in sizes.items()) == 96
    assert max(sizes) > 1
    with BlockClient(served.address) as client:
        bad = client.run({"x": [1, 2]})
    assert not bad.ok and "256 numbers" in bad.error.message


def test_sdk_imports_and_serves_without_torch():
    code = """
import sys
sys.modules["torch"] = None  # makes `import torch` fail as if it were not installed
from aios_grpc import *
from aios_grpc.testing import serve_block
from aios_grpc_client import BlockClient
from tests.blocks.basic import EchoBlock
with serve_block(EchoBlock, workers=1) as served:
    with BlockClient(served.address) as client:
        assert client.run({"a": 1}).data == {"echo": {"a": 1}}
try:
    import aios_grpc.torch
except ImportError as exc:
    print("IMPORT-ERROR:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'aios-grpc[torch]'" in proc.stdout
