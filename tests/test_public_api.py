"""``from aios_grpc import *``, the seed's SimpleBlock, and ``BlockTester``."""

from __future__ import annotations

import importlib.util
import json

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

import aios_grpc
from aios_grpc import *
from tests.conftest import ROOT

# Pinned on purpose: a change to the public surface must show up in this diff.
PUBLIC = [
    "AIOSMetrics", "AIOSPacket", "AiosError", "Batcher", "Block", "BlockCodeError", "BlockEvents",
    "BlockServer", "BlockSideCars", "BlockTester", "ConfigurationError", "Context", "DeadlineExceeded",
    "FileInfo", "InvalidInput", "InvalidPacket", "Muxer", "OnDataResult", "PacketError", "ParametersRejected",
    "Permanent", "PermissionDenied", "PreProcessResult", "PreprocessRejected", "ProcessingFailed",
    "ResourceExhausted", "SessionsManager", "Settings", "StateDict", "TestContext", "TimeBasedBatcher",
    "Transient", "Unavailable", "UnknownAction", "__version__", "json", "load_settings", "time",
]  # fmt: skip


def _simple_block_class() -> type:
    spec = importlib.util.spec_from_file_location("simple_block_example", ROOT / "examples" / "simple_block.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleBlock  # type: ignore[no-any-return]


SimpleBlock = _simple_block_class()


def test_all_is_sorted_and_pinned():
    assert aios_grpc.__all__ == sorted(aios_grpc.__all__)
    assert aios_grpc.__all__ == PUBLIC
    namespace: dict = {}
    exec("from aios_grpc import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_the_example_differs_from_the_seed_only_in_its_import_line():
    text = (ROOT / "examples" / "simple_block.py").read_text()
    assert "from aios_grpc import *" in text
    assert "class SimpleBlock:" in text and "Block(SimpleBlock)" in text


INPUTS = [{"value": 0.9}, {"value": 0.1}, {"value": 0.5}, {}, {"value": 2}]


def test_simple_block_gives_the_same_outputs_through_tester_and_server(serve):
    tester = BlockTester(SimpleBlock)
    expected = [tester.run(data) for data in INPUTS]
    assert expected[0] == [{"value": 0.9, "passed": True}]
    assert expected[1] == [{"value": 0.1, "passed": False}]
    served = serve(SimpleBlock)
    with BlockClient(served.address) as client:
        results = list(client.process(INPUTS, session_id="s"))
    assert [[r.data] for r in results] == expected
    # The same after a parameter update, applied by both.
    tester.block.on_update({"threshold": 0.05})
    with BlockClient(served.address) as client:
        client.set_parameters({"threshold": 0.05})
        served_out = client.run({"value": 0.1}).data
        assert client.management("get_threshold") == {"threshold": 0.05}
    assert [served_out] == tester.run({"value": 0.1}) == [{"value": 0.1, "passed": True}]


def test_simple_block_invalid_json_is_rejected_the_same_way(serve):
    with pytest.raises(InvalidPacket, match="not valid JSON") as raised:
        BlockTester(SimpleBlock).run("{broken")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    served = serve(SimpleBlock)
    with BlockClient(served.address) as client:
        result = next(client.process([make_packet("{broken", session_id="s", seq_no=1)]))
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT and "not valid JSON" in result.error.message


class FileBlock:
    """Reports the files it received."""

    def __init__(self, context):
        self.context = context

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data={"n": len(packet.files)})]

    def on_data(self, entry):
        files = [
            {"meta": f.meta(), "size": len(f.file_data), "head": f.file_data[:2].hex()} for f in entry.packet.files
        ]
        return True, OnDataResult(output={"files": files, "data": entry.packet.json()})


def test_block_tester_run_with_files():
    out = BlockTester(FileBlock).run(
        data={"value": 1.0},
        files=[({"filename": "image.jpg", "type": "jpeg"}, b"\xff\xd8\xff\x00"), ('{"raw": 1}', b"")],
    )
    assert out == [{
        "files": [
            {"meta": {"filename": "image.jpg", "type": "jpeg"}, "size": 4, "head": "ffd8"},
            {"meta": {"raw": 1}, "size": 0, "head": ""},
        ],
        "data": {"value": 1.0},
    }]  # fmt: skip


def test_block_tester_init_with_context_honours_parameters():
    context = TestContext()
    context.block_init_parameters = {"threshold": 0.75}
    context.metrics = AIOSMetrics()
    context.sessions = SessionsManager()
    context.events = BlockEvents()
    tester = BlockTester.init_with_context(SimpleBlock, context)
    assert tester.context is context and tester.block.context is context
    assert tester.run({"value": 0.6}) == [{"value": 0.6, "passed": False}]
    assert tester.run({"value": 0.8}) == [{"value": 0.8, "passed": True}]
    assert BlockTester(SimpleBlock).run({"value": 0.6}) == [{"value": 0.6, "passed": True}]


def test_block_tester_reports_failures_with_the_servers_codes():
    from tests.blocks.basic import EchoBlock, StreamingBlock

    tester = BlockTester(EchoBlock)
    with pytest.raises(PreprocessRejected, match="on_preprocess rejected the packet: no") as rejected:
        tester.run({"reject": "no"})
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ProcessingFailed, match="on_data failed: bad"):
        tester.run({"fail": "bad"})
    with pytest.raises(BlockCodeError, match="on_data raised ValueError: boom"):
        tester.run({"raise": "boom"})
    assert tester.run({"none": True}) == []
    assert BlockTester(StreamingBlock).run({"text": "a b"}) == [{"token": "a"}, {"token": "b"}]


def test_block_tester_runs_async_blocks():
    from tests.blocks.basic import AsyncBlock

    assert BlockTester(AsyncBlock).run({"x": 1}) == [{"async": {"x": 1}}]


def test_a_wrong_return_shape_names_the_method():
    class Wrong:
        def __init__(self, context):
            pass

        def on_data(self, entry):
            return {"not": "a tuple"}

    with pytest.raises(BlockCodeError, match=r"on_data must return .*got \{'not': 'a tuple'\}"):
        BlockTester(Wrong).run({})


def test_packet_helpers():
    packet = AIOSPacket(session_id="s", seq_no=1, data=json.dumps({"v": 1}), files=[FileInfo("{}", b"x")])
    assert packet.json() == {"v": 1}
    assert packet.files[0].meta() == {}
    from aios_grpc._pb import pb

    assert pb.Packet.FromString(packet.SerializeToString()).data == '{"v": 1}'


def test_the_public_api_is_documented_and_typed():
    import inspect

    missing = []
    for name in aios_grpc.__all__:
        obj = getattr(aios_grpc, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        members = inspect.getmembers(obj, inspect.isfunction) if inspect.isclass(obj) else [(name, obj)]
        for member_name, fn in members:
            if member_name.startswith("_") or fn.__module__ is None or not fn.__module__.startswith("aios_grpc"):
                continue
            if not inspect.getdoc(fn):
                missing.append(f"{name}.{member_name} (docstring)")
            if "return" not in fn.__annotations__:
                missing.append(f"{name}.{member_name} (return type)")
    assert not missing, missing
