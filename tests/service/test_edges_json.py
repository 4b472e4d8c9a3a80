"""JSON nested too deep is INVALID_ARGUMENT at decode, on the data and control planes (issue 12, case 6)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient

from aios_grpc._pb import pb, pb_grpc
from aios_grpc.json_depth import depth_of, text_too_deep
from tests.blocks.edges import SizedBlock


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_packets_nested_past_the_limit_are_invalid_argument_at_decode_and_the_stream_goes_on(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve(SizedBlock, max_json_depth=64)
    packets = [
        pb.Packet(session_id="s", seq_no=1, data=_nested(1000)),  # past the parser's own recursion limit
        pb.Packet(session_id="s", seq_no=2, data=_nested(65)),
        pb.Packet(session_id="s", seq_no=3, data=_nested(64)),
        pb.Packet(session_id="s", seq_no=4, data='{"a": ' * 100 + "1" + "}" * 100),
        pb.Packet(session_id="s", seq_no=5, data='{"ok": ["[[[[[[[[", 1]}'),
    ]
    with BlockClient(served.address) as client:
        results = list(client.process(packets, timeout=30))
    by_seq = {r.seq_no: r for r in results}
    assert sorted(by_seq) == [1, 2, 3, 4, 5]
    for seq in (1, 2, 4):
        error = by_seq[seq].error
        assert error is not None and error.code == grpc.StatusCode.INVALID_ARGUMENT and error.stage == "decode"
        assert "nests deeper than 64 levels" in error.message and "AIOS_MAX_JSON_DEPTH" in error.message
    assert by_seq[3].ok and by_seq[5].ok
    assert "RecursionError" not in caplog.text


def test_a_struct_nested_past_the_limit_is_invalid_argument_on_the_control_plane(serve: Any) -> None:
    served = serve(SizedBlock, max_json_depth=8)
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(12):
        value = {"n": value}
    with BlockClient(served.address) as client:
        for call in (lambda: client.set_parameters(value), lambda: client.management("echo", value)):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "nests deeper than 8 levels" in refused.value.details()
        assert client.set_parameters({"shallow": {"a": [1, 2]}})["applied"] == {"shallow": {"a": [1, 2]}}


def test_a_struct_too_deep_for_protobuf_is_invalid_argument_not_unknown(serve: Any) -> None:
    served = serve(SizedBlock)
    inner = pb.ManagementRequest(action="echo")
    struct = inner.data
    for _ in range(60):  # 120 message levels: past protobuf's parse limit of 100
        struct = struct.fields["n"].struct_value
    channel = grpc.insecure_channel(served.address)
    stub = pb_grpc.BlockServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Management(inner, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ManagementRequest" in refused.value.details()


def test_depth_is_counted_without_recursion_and_short_text_is_not_walked() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    assert depth_of(deep, 100) == 101  # stops counting past the limit
    assert depth_of({"a": [1, {"b": []}]}, 64) == 4
    assert not text_too_deep("[[]]", [[]], 2)  # 4 characters cannot nest 3 deep: not walked
    assert not text_too_deep('["[[[[", "]]]]"]', ["[[[[", "]]]]"], 2)  # brackets in strings: walked, depth 1
    assert text_too_deep("[[[]]]", [[[]]], 2)
