"""grpcurl drives a served block: reflection, describe, Process, control plane, health."""

from __future__ import annotations

import json

import pytest

from tests.blocks.basic import EchoBlock
from tests.conftest import grpcurl, json_stream

SERVICE = "aios.block.v1.BlockService"


@pytest.fixture
def address(serve):
    return serve(EchoBlock, block_id="echo", instance_id="echo-1", block_init_parameters={"threshold": 0.5}).address


def call(address: str, method: str, data: object | None = None, check: bool = True):
    args = ["-plaintext"]
    if data is not None:
        args += ["-d", "@"]
    text = data if isinstance(data, str) or data is None else json.dumps(data)
    return grpcurl(*args, address, f"{SERVICE}/{method}", data=text, check=check)


def test_list_shows_the_block_service_health_and_reflection(address):
    services = grpcurl("-plaintext", address, "list").stdout.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    methods = grpcurl("-plaintext", address, "list", SERVICE).stdout.split()
    assert methods == [f"{SERVICE}.{m}" for m in ("GetInfo", "Management", "Process", "SetParameters")]


def test_describe_shows_the_comments_written_in_the_proto(address):
    service = grpcurl("-plaintext", address, "describe", SERVICE).stdout
    assert "Every input" in service and "packet gets exactly one terminal result" in service
    assert "rpc Process ( stream .aios.block.v1.ProcessRequest )" in service
    packet = grpcurl("-plaintext", address, "describe", "aios.block.v1.Packet").stdout
    assert "Wire-compatible with the" in packet
    assert "Session the packet belongs to" in packet
    assert "reserved 3;" in packet


def test_process_with_several_packets_from_stdin_answers_each_once(address):
    packets = [
        {"packet": {"sessionId": "s1", "seqNo": 1, "data": json.dumps({"value": 1})}},
        {"packet": {"sessionId": "s1", "seqNo": 2, "data": "not json"}},
        {"packet": {"sessionId": "s1", "seqNo": 3, "data": json.dumps({"reject": "too big"})}},
        {"packet": {"sessionId": "s2", "seqNo": 1, "data": json.dumps({"none": True})}},
        {"packet": {"sessionId": "s1", "seqNo": 4, "data": json.dumps({"value": 4})}},
    ]
    stdin = "\n".join(json.dumps(p) for p in packets)
    responses = json_stream(call(address, "Process", stdin).stdout)
    results = [r["result"] for r in responses]
    assert sorted((r["sessionId"], r["seqNo"]) for r in results) == [
        ("s1", "1"), ("s1", "2"), ("s1", "3"), ("s1", "4"), ("s2", "1"),
    ]  # fmt: skip
    # Session s1 comes back in the order it was sent.
    assert [r["seqNo"] for r in results if r["sessionId"] == "s1"] == ["1", "2", "3", "4"]
    by_key = {(r["sessionId"], r["seqNo"]): r for r in results}
    first = by_key[("s1", "1")]
    assert first["kind"] == "RESULT_KIND_OK"
    assert json.loads(first["output"]["data"]) == {"echo": {"value": 1}}
    assert by_key[("s1", "2")]["kind"] == "RESULT_KIND_ERROR"
    assert by_key[("s1", "2")]["error"]["codeName"] == "INVALID_ARGUMENT"
    assert "not valid JSON" in by_key[("s1", "2")]["error"]["message"]
    assert by_key[("s1", "3")]["error"]["message"] == "on_preprocess rejected the packet: too big"
    assert by_key[("s2", "1")]["kind"] == "RESULT_KIND_OK" and "output" not in by_key[("s2", "1")]
    assert json.loads(by_key[("s1", "4")]["output"]["data"]) == {"echo": {"value": 4}}


def test_set_parameters_takes_a_json_object(address):
    out = json.loads(call(address, "SetParameters", {"parameters": {"threshold": 0.9, "mode": "fast"}}).stdout)
    assert out["applied"] == {"threshold": 0.9, "mode": "fast"}
    assert out["parameters"] == {"threshold": 0.9, "mode": "fast"}
    info = json.loads(call(address, "GetInfo", {}).stdout)
    assert info["parameters"] == {"threshold": 0.9, "mode": "fast"}


def test_set_parameters_rejected_by_on_update_is_invalid_argument(address):
    proc = call(address, "SetParameters", {"parameters": {"bad": 1}}, check=False)
    assert proc.returncode != 0
    assert "Code: InvalidArgument" in proc.stderr
    assert "on_update rejected the parameters: parameter 'bad' is not allowed" in proc.stderr
    # Nothing was applied.
    assert json.loads(call(address, "GetInfo", {}).stdout)["parameters"] == {"threshold": 0.5}


def test_management_runs_the_blocks_action(address):
    call(address, "Process", json.dumps({"packet": {"sessionId": "s", "seqNo": 1, "data": "{}"}}))
    out = json.loads(call(address, "Management", {"action": "calls", "data": {"any": "thing"}}).stdout)
    assert out == {"result": {"calls": 1}}


def test_unknown_management_action_is_unimplemented(address):
    proc = call(address, "Management", {"action": "fly"}, check=False)
    assert proc.returncode != 0
    assert "Code: Unimplemented" in proc.stderr and "unknown action 'fly'" in proc.stderr


def test_management_raising_is_internal(address):
    proc = call(address, "Management", {"action": "boom"}, check=False)
    assert proc.returncode != 0
    assert "Code: Internal" in proc.stderr
    assert "management('boom') raised RuntimeError: management exploded" in proc.stderr


def test_get_info_names_the_instance(address):
    info = json.loads(call(address, "GetInfo", {}).stdout)
    assert info["blockId"] == "echo" and info["instanceId"] == "echo-1"
    assert info["blockClass"] == "tests.blocks.basic:EchoBlock"
    assert info["sdkVersion"]
    assert info["parameters"] == {"threshold": 0.5}
    assert info["batcher"]["kind"] == "none"


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_check_is_serving(address, service):
    data = json.dumps({"service": service})
    out = grpcurl("-plaintext", "-d", data, address, "grpc.health.v1.Health/Check").stdout
    assert json.loads(out) == {"status": "SERVING"}


def test_health_check_of_an_unknown_service_is_not_found(address):
    proc = grpcurl("-plaintext", "-d", '{"service": "nope"}', address, "grpc.health.v1.Health/Check", check=False)
    assert proc.returncode != 0 and "Code: NotFound" in proc.stderr
