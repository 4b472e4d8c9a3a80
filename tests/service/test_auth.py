"""Bearer tokens on the data and control planes: a real server, the Python client, grpcurl."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from aios_grpc_client import AsyncBlockClient, BlockClient

from aios_grpc.errors import ConfigurationError
from aios_grpc.service.auth import PERMISSION_MESSAGE, UNAUTHENTICATED_MESSAGE
from aios_grpc.testing import serve_block
from tests.blocks.basic import EchoBlock
from tests.conftest import grpcurl
from tests.helpers import wait_for

SERVICE = "aios.block.v1.BlockService"
DATA = "data-token-0123456789"
CONTROL = "control-token-9876543210"


def rpc(client: BlockClient, method: str) -> Any:
    """Call ``method`` (Process, SetParameters, Management, GetInfo) once with the client."""
    if method == "Process":
        result = client.run({"x": 1}, timeout=20)
        assert result.ok, result
        return result
    if method == "SetParameters":
        return client.set_parameters({"threshold": 0.7}, timeout=20)
    if method == "Management":
        return client.management("calls", timeout=20)
    return client.get_info(timeout=20)


def code_of(client: BlockClient, method: str) -> grpc.StatusCode:
    """The status the call ends with (OK when it succeeds)."""
    try:
        rpc(client, method)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


CONTROL_RPCS = ["SetParameters", "Management", "GetInfo"]
ALL_RPCS = ["Process", *CONTROL_RPCS]


@pytest.fixture
def both_planes(serve: Any) -> Any:
    return serve(EchoBlock, auth_tokens=[DATA], control_tokens=[CONTROL])


@pytest.mark.parametrize("method", ALL_RPCS)
def test_without_a_token_or_with_a_wrong_one_every_rpc_is_unauthenticated(both_planes: Any, method: str) -> None:
    for token in (None, "wrong-token", DATA[:-1]):
        with BlockClient(both_planes.address, token=token) as client:
            with pytest.raises(grpc.RpcError) as info:
                rpc(client, method)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        details = info.value.details() or ""
        assert details == UNAUTHENTICATED_MESSAGE
        assert DATA not in details and CONTROL not in details and "1" not in details  # no token, no count


def test_a_malformed_authorization_header_is_unauthenticated(both_planes: Any) -> None:
    for value in ("Basic dXNlcjpwYXNz", "Bearer", f"Token {DATA}"):
        with BlockClient(both_planes.address, metadata=[("authorization", value)]) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.get_info(timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert DATA not in (info.value.details() or "")


@pytest.mark.parametrize("method", CONTROL_RPCS)
def test_a_data_token_on_the_control_plane_is_permission_denied(both_planes: Any, method: str) -> None:
    with BlockClient(both_planes.address, token=DATA) as client:
        with pytest.raises(grpc.RpcError) as info:
            rpc(client, method)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == PERMISSION_MESSAGE


@pytest.mark.parametrize("method", ALL_RPCS)
def test_the_right_tokens_pass_on_every_rpc(both_planes: Any, method: str) -> None:
    token = DATA if method == "Process" else CONTROL
    with BlockClient(both_planes.address, token=token) as client:
        assert code_of(client, method) == grpc.StatusCode.OK
    with BlockClient(both_planes.address, token=CONTROL) as client:
        assert code_of(client, method) == grpc.StatusCode.OK  # control tokens are good on the data plane too


def test_data_tokens_alone_guard_the_control_plane_too(serve: Any) -> None:
    served = serve(EchoBlock, auth_tokens=[DATA, "second-data-token"])
    for method in ALL_RPCS:
        with BlockClient(served.address) as client:
            assert code_of(client, method) == grpc.StatusCode.UNAUTHENTICATED, method
        with BlockClient(served.address, token="second-data-token") as client:
            assert code_of(client, method) == grpc.StatusCode.OK, method


def test_control_tokens_alone_leave_the_data_plane_open(serve: Any) -> None:
    served = serve(EchoBlock, control_tokens=[CONTROL])
    with BlockClient(served.address) as client:
        assert code_of(client, "Process") == grpc.StatusCode.OK
        assert code_of(client, "GetInfo") == grpc.StatusCode.UNAUTHENTICATED
    with BlockClient(served.address, token=CONTROL) as client:
        assert code_of(client, "GetInfo") == grpc.StatusCode.OK


def test_health_stays_open_and_reflection_follows_the_data_plane(both_planes: Any) -> None:
    with BlockClient(both_planes.address) as client:
        assert client.health() == "SERVING"
        assert client.health(SERVICE) == "SERVING"
    address = both_planes.address
    # grpcurl learns the Health service by reflection (which needs the token); the Check
    # call itself goes without one.
    reflect = ["-reflect-header", f"authorization: Bearer {DATA}"]
    assert "SERVING" in grpcurl("-plaintext", *reflect, address, "grpc.health.v1.Health/Check").stdout
    refused = grpcurl("-plaintext", address, "list", check=False)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
    listed = grpcurl("-plaintext", "-H", f"authorization: Bearer {DATA}", address, "list").stdout.split()
    assert SERVICE in listed


def test_reflection_open_and_off(serve: Any) -> None:
    opened = serve(EchoBlock, auth_tokens=[DATA], reflection="open")
    assert SERVICE in grpcurl("-plaintext", opened.address, "list").stdout.split()
    # ... while the methods themselves still need the token.
    refused = grpcurl("-plaintext", opened.address, f"{SERVICE}/GetInfo", check=False)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
    off = serve(EchoBlock, reflection="off")
    gone = grpcurl("-plaintext", off.address, "list", check=False)
    assert gone.returncode != 0 and "reflection" in gone.stderr.lower()


def test_grpcurl_with_the_authorization_header_reaches_each_plane(both_planes: Any) -> None:
    address = both_planes.address
    data_header = ["-H", f"authorization: Bearer {DATA}"]
    control_header = ["-H", f"authorization: Bearer {CONTROL}"]
    packet = json.dumps({"packet": {"sessionId": "s", "seqNo": 1, "data": json.dumps({"x": 1})}})
    out = grpcurl("-plaintext", *data_header, "-d", "@", address, f"{SERVICE}/Process", data=packet).stdout
    assert '"RESULT_KIND_OK"' in out
    info = json.loads(grpcurl("-plaintext", *control_header, address, f"{SERVICE}/GetInfo").stdout)
    assert info["blockId"]
    denied = grpcurl("-plaintext", *data_header, address, f"{SERVICE}/GetInfo", check=False)
    assert denied.returncode != 0 and "PermissionDenied" in denied.stderr
    missing = grpcurl("-plaintext", "-d", "@", address, f"{SERVICE}/Process", data=packet, check=False)
    assert missing.returncode != 0 and "Unauthenticated" in missing.stderr


async def test_the_asyncio_client_sends_its_token(both_planes: Any) -> None:
    async with AsyncBlockClient(both_planes.address, token=DATA) as client:
        result = await client.run({"x": 2}, timeout=20)
        assert result.ok
    async with AsyncBlockClient(both_planes.address, token="nope") as client:
        with pytest.raises(grpc.RpcError) as info:
            await client.run({"x": 2}, timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_rotated_token_file_keeps_the_open_stream_and_new_calls_need_the_new_token(
    serve: Any, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# data-plane tokens\nold-token\n")
    served = serve(EchoBlock, auth_tokens_file=str(tokens), tls_reload_s=0)
    with BlockClient(served.address, token="old-token") as old:
        stream = old.stream(timeout=60)
        results = stream.results()
        stream.send(_packet(1))
        assert next(results).ok
        # Rotate: write a new file and swap it in (as a Kubernetes Secret update does).
        fresh = tmp_path / "tokens.new"
        fresh.write_text("new-token\n")
        os.replace(fresh, tokens)
        with BlockClient(served.address, token="new-token") as new:
            wait_for(lambda: code_of(new, "Process") == grpc.StatusCode.OK, what="the new token to be accepted")
        assert code_of(old, "Process") == grpc.StatusCode.UNAUTHENTICATED
        # The stream opened with the old token still works.
        stream.send(_packet(2))
        second = next(results)
        assert second.ok and second.seq_no == 2
        stream.close()
        assert list(results) == []


def test_a_token_file_emptied_keeps_the_tokens_read_before(
    serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("kept-token\n")
    served = serve(EchoBlock, auth_tokens_file=str(tokens), tls_reload_s=0)
    with caplog.at_level(logging.WARNING, logger="aios_grpc.auth"):
        tokens.write_text("\n")
        with BlockClient(served.address, token="kept-token") as client:
            assert code_of(client, "Process") == grpc.StatusCode.OK
    assert any("holds no token" in r.getMessage() for r in caplog.records)
    assert not any("kept-token" in r.getMessage() for r in caplog.records)


def test_no_token_is_logged(both_planes: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="aios_grpc"):
        for token in (DATA, CONTROL, "wrong-token-xyz"):
            with BlockClient(both_planes.address, token=token) as client:
                for method in ALL_RPCS:
                    code_of(client, method)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert DATA not in text and CONTROL not in text and "wrong-token-xyz" not in text


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"auth_tokens": [""]}, "AIOS_AUTH_TOKENS: a token is empty"),
        ({"control_tokens": ["ok", " "]}, "AIOS_CONTROL_TOKENS: a token is empty"),
        ({"auth_tokens_file": "/nonexistent/tokens"}, "AIOS_AUTH_TOKENS_FILE='/nonexistent/tokens': cannot read"),
        ({"control_tokens_file": "EMPTY"}, "holds no token"),
    ],
)
def test_token_misconfiguration_fails_at_start_up_with_one_line(
    settings: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    if settings.get("control_tokens_file") == "EMPTY":
        empty = tmp_path / "empty"
        empty.write_text("# nothing\n\n")
        settings = {"control_tokens_file": str(empty)}
    with pytest.raises(ConfigurationError) as info:
        serve_block(EchoBlock, **settings)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_a_bad_token_variable_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from aios_grpc.settings import load_settings

    monkeypatch.setenv("AIOS_AUTH_TOKENS", '["s3cret-value"')
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "AIOS_AUTH_TOKENS" in str(info.value) and "s3cret" not in str(info.value)
    monkeypatch.setenv("AIOS_AUTH_TOKENS", '{"s3cret-value": 1}')
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "AIOS_AUTH_TOKENS" in str(info.value) and "s3cret" not in str(info.value)
    assert "s3cret" not in repr(load_settings(auth_tokens=["s3cret-value"]))


def _packet(seq_no: int) -> Any:
    from aios_grpc_client import make_packet

    return make_packet({"x": seq_no}, session_id="rot", seq_no=seq_no)


def test_the_token_is_checked_once_per_call_not_per_packet(both_planes: Any) -> None:
    auth = both_planes.server.auth
    checked: list[str] = []
    decide = auth.decide

    def counting(method: str, metadata: Any) -> Any:
        checked.append(method)
        return decide(method, metadata)

    auth.decide = counting
    with BlockClient(both_planes.address, token=DATA) as client:
        results = [r for r in client.process([{"i": i} for i in range(200)], timeout=60) if r.terminal]
    assert len(results) == 200 and all(r.ok for r in results)
    assert checked == [f"/{SERVICE}/Process"]
