"""The control plane answers within the message limit whatever is stored (issue 12, cases 3 and 7)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient

from aios_grpc._pb import pb
from tests.blocks.edges import SizedBlock

LIMIT = 1024 * 1024


def _raw_unary(address: str, method: str) -> Any:
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 8 * LIMIT)])
    return channel.unary_unary(
        f"/aios.block.v1.BlockService/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )


def test_an_update_over_the_size_limit_is_refused_before_it_is_applied(serve: Any) -> None:
    served = serve(SizedBlock, max_message_bytes=LIMIT, max_parameters_bytes=64 * 1024)
    with BlockClient(served.address, max_message_bytes=8 * LIMIT) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.set_parameters({"big": "x" * 100_000})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the limit of 65536 (AIOS_MAX_PARAMETERS_BYTES)" in (refused.value.details() or "")
        # Updates that each fit but together would not: the one that breaks the limit is refused.
        client.set_parameters({"a": "y" * 40_000})
        with pytest.raises(grpc.RpcError) as refused:
            client.set_parameters({"b": "z" * 40_000})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = client.get_info()
        assert set(info["parameters"]) == {"a"}  # the refused ones were never applied
        assert client.set_parameters({"a": 1})["parameters"] == {"a": 1}


def test_getinfo_and_setparameters_answer_when_the_stored_parameters_are_too_large_for_a_message(
    serve: Any,
) -> None:
    # Parameters set at start-up are not bounded by AIOS_MAX_PARAMETERS_BYTES.
    served = serve(SizedBlock, max_message_bytes=LIMIT, block_init_parameters={"huge": "h" * (2 * LIMIT)})
    with BlockClient(served.address, max_message_bytes=LIMIT) as client:
        info = client.get_info()
        assert info["block_id"] and "aios.omitted" in info["parameters"]
        with pytest.raises(grpc.RpcError) as refused:
            client.set_parameters({"small": 1})  # the stored parameters already break the limit
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.get_info()["block_id"]  # still answers


def test_a_management_result_too_large_is_resource_exhausted_naming_its_size(serve: Any) -> None:
    served = serve(SizedBlock, max_message_bytes=LIMIT)
    with BlockClient(served.address, max_message_bytes=8 * LIMIT) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.management("size", {"size": 2 * LIMIT})
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"over the message limit of {LIMIT} bytes" in (refused.value.details() or "")
        assert client.management("echo", {"k": 1}) == {"k": 1}


@pytest.mark.parametrize("method", ["SetParameters", "Management", "GetInfo"])
def test_an_undecodable_control_request_is_invalid_argument_naming_its_type(serve: Any, method: str) -> None:
    served = serve(SizedBlock)
    with pytest.raises(grpc.RpcError) as refused:
        _raw_unary(served.address, method)(b"\xff\xff\xff\xff", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert f"aios.block.v1.{method}Request message could not be parsed" in details
    assert "class" not in details
    with BlockClient(served.address) as client:
        assert client.get_info()["block_id"]


def test_a_control_request_over_the_limit_is_resource_exhausted_naming_the_limit(serve: Any) -> None:
    served = serve(SizedBlock, max_message_bytes=LIMIT)
    request = pb.ManagementRequest(action="echo")
    request.data.update({"blob": "b" * (LIMIT + 1000)})
    with pytest.raises(grpc.RpcError) as refused:
        _raw_unary(served.address, "Management")(request.SerializeToString(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"over the limit of {LIMIT} bytes (AIOS_MAX_MESSAGE_BYTES)" in (refused.value.details() or "")
