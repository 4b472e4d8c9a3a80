"""The Python client (blocking and asyncio) against a real served block."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest
from aios_grpc_client import AsyncBlockClient, BlockClient, make_packet

from tests.blocks.basic import EchoBlock, StreamingBlock
from tests.conftest import ROOT


def test_blocking_control_plane(serve):
    served = serve(EchoBlock, block_id="echo", instance_id="i-1", block_init_parameters={"k": 1})
    with BlockClient(served.address) as client:
        assert client.health() == "SERVING"
        assert client.health("aios.block.v1.BlockService") == "SERVING"
        out = client.set_parameters({"threshold": 0.7, "nested": {"a": [1, 2]}})
        assert out["applied"] == {"threshold": 0.7, "nested": {"a": [1, 2]}}
        assert out["parameters"] == {"k": 1, "threshold": 0.7, "nested": {"a": [1, 2]}}
        assert client.run({"x": 1}).data == {"echo": {"x": 1}}
        assert client.management("calls") == {"calls": 1}
        info = client.get_info()
        assert info["block_id"] == "echo" and info["instance_id"] == "i-1"
        assert info["parameters"]["threshold"] == 0.7


def test_blocking_control_plane_errors_carry_codes(serve):
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        with pytest.raises(grpc.RpcError) as rejected:
            client.set_parameters({"bad": True})
        assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameter 'bad' is not allowed" in rejected.value.details()
        with pytest.raises(grpc.RpcError) as unknown:
            client.management("nope")
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as boom:
            client.management("boom")
        assert boom.value.code() == grpc.StatusCode.INTERNAL
        # The server is still fine afterwards.
        assert client.run({"after": True}).ok


@pytest.mark.parametrize("bad", [[1, 2], "text", 3, None, []])
def test_non_dict_parameters_are_a_clear_type_error(serve, bad):
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        with pytest.raises(TypeError, match=r"parameters must be a dict \(a JSON object\), got"):
            client.set_parameters(bad)
        with pytest.raises(TypeError, match=r"data must be a dict"):
            client.management("calls", bad if bad is not None else "x")


def test_non_dict_parameters_are_a_clear_type_error_async(serve):
    served = serve(EchoBlock)

    async def main() -> None:
        async with AsyncBlockClient(served.address) as client:
            with pytest.raises(TypeError, match="parameters must be a dict"):
                await client.set_parameters([1])  # type: ignore[arg-type]

    asyncio.run(main())


def test_async_client_everything(serve):
    served = serve(EchoBlock, block_id="echo")

    async def main() -> dict:
        async with AsyncBlockClient(served.address) as client:
            out: dict = {"health": await client.health()}
            out["set"] = await client.set_parameters({"t": 2})
            out["results"] = [r async for r in client.process([{"i": i} for i in range(20)], session_id="a")]
            out["one"] = await client.run({"x": 5})
            out["mgmt"] = await client.management("calls")
            out["info"] = await client.get_info()
            return out

    out = asyncio.run(main())
    assert out["health"] == "SERVING"
    assert out["set"]["applied"] == {"t": 2}
    assert [r.data["echo"]["i"] for r in out["results"]] == list(range(20))
    assert out["one"].data == {"echo": {"x": 5}}
    assert out["mgmt"] == {"calls": 21}
    assert out["info"]["block_id"] == "echo" and out["info"]["parameters"] == {"t": 2}


def test_async_stream_send_and_read_concurrently(serve):
    served = serve(EchoBlock)
    n = 500

    async def main() -> list:
        async with AsyncBlockClient(served.address) as client:
            stream = client.stream(timeout=60)

            async def send() -> None:
                for i in range(n):
                    await stream.send(make_packet({"i": i}, session_id="s", seq_no=i))
                await stream.close()

            sender = asyncio.create_task(send())
            results = [r async for r in stream.results()]
            await sender
            return results

    results = asyncio.run(main())
    assert [r.seq_no for r in results] == list(range(n))


def test_async_client_accepts_an_async_iterable(serve):
    served = serve(EchoBlock)

    async def packets():
        for i in range(30):
            yield {"i": i}

    async def main() -> list:
        async with AsyncBlockClient(served.address) as client:
            return [r async for r in client.process(packets(), session_id="g", coalesce=8)]

    results = asyncio.run(main())
    assert [r.data["echo"]["i"] for r in results] == list(range(30))


def test_partial_results_reach_the_blocking_stream(serve):
    served = serve(StreamingBlock)
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"text": "x y"}, session_id="t", seq_no=1))
        stream.send([make_packet({"text": "z"}, session_id="t", seq_no=2)])
        stream.close()
        results = list(stream.results())
        with pytest.raises(RuntimeError, match="closed"):
            stream.send(make_packet({}, session_id="t", seq_no=3))
    expected = [(1, "partial"), (1, "partial"), (1, "ok"), (2, "partial"), (2, "ok")]
    assert [(r.seq_no, r.kind) for r in results] == expected


def test_wait_until_serving_times_out_with_the_last_status():
    client = BlockClient("127.0.0.1:1")
    try:
        with pytest.raises(TimeoutError, match=r"not SERVING after 0\.3s"):
            client.wait_until_serving(timeout=0.3)
    finally:
        client.close()


def test_make_packet_encodes_json_files_and_pointer():
    packet = make_packet(
        {"a": 1}, session_id="s", seq_no=7, files=[({"name": "f.bin"}, b"\x00\x01")],
        output_ptr={"outputs": []}, headers={"traceparent": "00-x"},
    )  # fmt: skip
    assert json.loads(packet.data) == {"a": 1}
    assert packet.files[0].file_data == b"\x00\x01" and json.loads(packet.files[0].metadata) == {"name": "f.bin"}
    assert json.loads(packet.output_ptr) == {"outputs": []}
    assert dict(packet.headers) == {"traceparent": "00-x"}


def test_client_package_imports_without_server_dependencies():
    code = (
        "import sys, aios_grpc_client\n"
        "heavy = [m for m in ('torch', 'redis', 'opentelemetry', 'aios_grpc', 'pydantic', 'prometheus_client')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    env_path = str(ROOT / "clients" / "python")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
