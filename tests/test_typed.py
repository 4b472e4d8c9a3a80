"""Typed parameters and input: validated before the block sees them, schemas in GetInfo."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient
from pydantic import BaseModel, Field

from aios_grpc import BlockTester, ConfigurationError, OnDataResult, PreProcessResult
from aios_grpc.testing import serve_block
from tests.conftest import grpcurl


@dataclass
class Limits:
    low: float = 0.0
    high: float = 1.0


class Params(BaseModel):
    threshold: float = 0.5
    limits: Limits = Field(default_factory=Limits)


class Reading(BaseModel):
    value: float
    unit: str = "C"


class TypedBlock:
    Input = Reading

    def __init__(self, context: Any) -> None:
        self.params = Params(**context.block_init_parameters)
        self.seen: list[Any] = []

    def on_preprocess(self, packet: Any) -> Any:
        return True, [PreProcessResult(packet=packet, extra_data=packet.json())]

    def on_data(self, entry: Any) -> Any:
        return True, OnDataResult(output={"passed": entry.extra_data["value"] > self.params.threshold})

    def on_update(self, params: Params) -> Any:  # the annotation declares the parameters' type
        self.seen.append(params)
        self.params = params
        return True, params

    def management(self, action: str, data: Any) -> Any:
        return {"types": [type(p).__name__ for p in self.seen], "high": self.params.limits.high}


def test_set_parameters_is_validated_and_on_update_gets_the_typed_object(serve: Any) -> None:
    served = serve(TypedBlock)
    with BlockClient(served.address) as client:
        with pytest.raises(grpc.RpcError) as raised:
            client.set_parameters({"limits": {"high": "very"}})
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameters: limits.high: Input should be a valid number" in raised.value.details()
        client.set_parameters({"threshold": 0.9, "limits": {"high": 5}})
        assert client.management("types") == {"types": ["Params"], "high": 5.0}
        assert client.run({"value": 0.95}, timeout=30).data == {"passed": True}


def test_packet_input_is_validated_before_on_preprocess(serve: Any) -> None:
    served = serve(TypedBlock)
    with BlockClient(served.address) as client:
        result = client.run({"unit": "F"}, timeout=30)
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.error.message == "input: value: Field required" and result.error.stage == "decode"
    with pytest.raises(Exception, match="input: value: Input should be a valid number"):
        BlockTester(TypedBlock).run({"value": "hot"})


def test_init_parameters_fail_fast_naming_the_field() -> None:
    class Strict(TypedBlock):
        Parameters = Params

    with pytest.raises(ConfigurationError, match=r"block_init_parameters: threshold: Input should be a valid number"):
        serve_block(Strict, block_init_parameters={"threshold": "x"}).close()


def test_get_info_reports_both_schemas_and_grpcurl_shows_them(serve: Any) -> None:
    served = serve(TypedBlock)
    with BlockClient(served.address) as client:
        info = client.get_info()
    assert info["input_schema"]["required"] == ["value"]
    assert info["input_schema"]["properties"]["value"]["type"] == "number"
    assert info["parameters_schema"]["properties"]["threshold"]["default"] == 0.5
    out = grpcurl("-plaintext", served.address, "aios.block.v1.BlockService/GetInfo").stdout
    assert json.loads(out)["inputSchema"]["title"] == "Reading"
