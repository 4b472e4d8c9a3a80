"""TLS and mutual TLS on the server: real certificates made here, the Python client, grpcurl."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient

from aios_grpc.errors import ConfigurationError
from aios_grpc.testing import serve_block
from tests.blocks.basic import EchoBlock
from tests.certs import Authority, Issued, write_key
from tests.conftest import grpcurl
from tests.helpers import wait_for

SERVICE = "aios.block.v1.BlockService"


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority("test-ca")


@pytest.fixture(scope="module")
def other_ca() -> Authority:
    return Authority("other-ca")


@pytest.fixture
def server_cert(ca: Authority, tmp_path: Path) -> Issued:
    return ca.issue("server", tmp_path / "server")


def works(client: BlockClient) -> bool:
    """Whether a Process call and a GetInfo call both succeed on ``client``."""
    try:
        ok = client.run({"x": 1}, timeout=10).ok
        client.get_info(timeout=10)
    except grpc.RpcError:
        return False
    return ok


def refused(client: BlockClient) -> grpc.StatusCode | None:
    """The code a GetInfo call fails with (None when it succeeds)."""
    try:
        client.get_info(timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return None


def test_tls_serves_clients_that_trust_its_ca_and_refuses_plaintext(
    serve: Any, ca: Authority, other_ca: Authority, server_cert: Issued, tmp_path: Path
) -> None:
    served = serve(EchoBlock, tls_cert_file=str(server_cert.cert), tls_key_file=str(server_cert.key))
    with BlockClient(served.address, root_certificates=ca.pem) as client:
        assert works(client)
        assert client.health() == "SERVING"
    with BlockClient(served.address) as plaintext:
        assert refused(plaintext) == grpc.StatusCode.UNAVAILABLE
    with BlockClient(served.address, root_certificates=other_ca.pem) as wrong_trust:
        assert refused(wrong_trust) == grpc.StatusCode.UNAVAILABLE
    ca_file = ca.write(tmp_path)
    out = grpcurl("-cacert", str(ca_file), served.address, f"{SERVICE}/GetInfo").stdout
    assert json.loads(out)["blockId"]
    plain = grpcurl("-plaintext", served.address, "list", check=False)
    assert plain.returncode != 0


def test_mutual_tls_needs_a_client_certificate_from_its_ca(
    serve: Any, ca: Authority, other_ca: Authority, server_cert: Issued, tmp_path: Path
) -> None:
    client_ca = ca.write(tmp_path)
    served = serve(
        EchoBlock,
        tls_cert_file=str(server_cert.cert),
        tls_key_file=str(server_cert.key),
        tls_client_ca_file=str(client_ca),
    )
    good = ca.issue("client", tmp_path / "good", client=True)
    stranger = other_ca.issue("client", tmp_path / "stranger", client=True)
    with BlockClient(served.address, root_certificates=ca.pem) as no_cert:
        assert refused(no_cert) == grpc.StatusCode.UNAVAILABLE
    with BlockClient(
        served.address, root_certificates=ca.pem, certificate_chain=stranger.cert, private_key=stranger.key
    ) as foreign:
        assert refused(foreign) == grpc.StatusCode.UNAVAILABLE
    with BlockClient(served.address, root_certificates=ca.pem, certificate_chain=good.cert, private_key=good.key) as ok:
        assert works(ok)
    args = ["-cacert", str(client_ca), "-cert", str(good.cert), "-key", str(good.key)]
    assert json.loads(grpcurl(*args, served.address, f"{SERVICE}/GetInfo").stdout)["blockId"]
    without = grpcurl("-cacert", str(client_ca), served.address, f"{SERVICE}/GetInfo", check=False)
    assert without.returncode != 0


def test_tls_and_tokens_together(serve: Any, ca: Authority, server_cert: Issued) -> None:
    served = serve(
        EchoBlock,
        tls_cert_file=str(server_cert.cert),
        tls_key_file=str(server_cert.key),
        auth_tokens=["tls-data"],
        control_tokens=["tls-control"],
    )
    with BlockClient(served.address, root_certificates=ca.pem) as anonymous:
        assert refused(anonymous) == grpc.StatusCode.UNAUTHENTICATED
    with BlockClient(served.address, root_certificates=ca.pem, token="tls-data") as data:
        assert data.run({"x": 1}, timeout=10).ok
        assert refused(data) == grpc.StatusCode.PERMISSION_DENIED
    with BlockClient(served.address, root_certificates=ca.pem, token="tls-control") as control:
        assert works(control)


def test_a_rotated_certificate_is_served_to_new_connections(
    serve: Any, ca: Authority, other_ca: Authority, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    first = ca.issue("server", live)
    served = serve(EchoBlock, tls_cert_file=str(first.cert), tls_key_file=str(first.key), tls_reload_s=0)
    old_client = BlockClient(served.address, root_certificates=ca.pem)
    try:
        assert works(old_client)
        # Rotate to a certificate from another CA: written aside, then moved in place.
        second = other_ca.issue("next", tmp_path / "next")
        os.replace(second.key, first.key)
        os.replace(second.cert, first.cert)
        with BlockClient(served.address, root_certificates=other_ca.pem) as new_trust:
            wait_for(lambda: works(new_trust), what="the rotated certificate to be served")
        with BlockClient(served.address, root_certificates=ca.pem) as old_trust:
            assert refused(old_trust) == grpc.StatusCode.UNAVAILABLE
        assert works(old_client)  # the connection made before the rotation keeps working
        assert served.server.tls.reloads == 1
    finally:
        old_client.close()


def test_a_half_written_rotation_keeps_the_old_certificate(serve: Any, ca: Authority, tmp_path: Path) -> None:
    live = ca.issue("server", tmp_path / "live")
    served = serve(EchoBlock, tls_cert_file=str(live.cert), tls_key_file=str(live.key), tls_reload_s=0)
    write_key(live.key)  # the key changed, the certificate not (yet): they do not match
    with BlockClient(served.address, root_certificates=ca.pem) as client:
        assert works(client)
    assert served.server.tls.reloads == 0


def _misconfigurations(ca: Authority, tmp_path: Path) -> list[tuple[dict[str, str], str]]:
    good = ca.issue("server", tmp_path / "good")
    ca_file = ca.write(tmp_path)
    stray_key = write_key(tmp_path / "stray.key")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    return [
        ({"tls_cert_file": str(good.cert)}, "AIOS_TLS_CERT_FILE is set without AIOS_TLS_KEY_FILE"),
        ({"tls_key_file": str(good.key)}, "AIOS_TLS_KEY_FILE is set without AIOS_TLS_CERT_FILE"),
        ({"tls_client_ca_file": str(ca_file)}, "AIOS_TLS_CLIENT_CA_FILE needs AIOS_TLS_CERT_FILE"),
        (
            {"tls_cert_file": str(tmp_path / "missing.crt"), "tls_key_file": str(good.key)},
            "AIOS_TLS_CERT_FILE=",
        ),
        ({"tls_cert_file": str(good.cert), "tls_key_file": str(stray_key)}, "does not match the certificate"),
        ({"tls_cert_file": str(not_pem), "tls_key_file": str(good.key)}, "not a PEM file"),
        (
            {"tls_cert_file": str(good.cert), "tls_key_file": str(good.key), "tls_client_ca_file": str(not_pem)},
            "AIOS_TLS_CLIENT_CA_FILE",
        ),
    ]


def test_tls_misconfiguration_fails_at_start_up_with_one_line(ca: Authority, tmp_path: Path) -> None:
    for settings, expected in _misconfigurations(ca, tmp_path):
        with pytest.raises(ConfigurationError) as info:
            serve_block(EchoBlock, **settings)
        message = str(info.value)
        assert expected in message, (settings, message)
        assert "\n" not in message


def test_the_key_check_without_cryptography_uses_ssl(ca: Authority, tmp_path: Path) -> None:
    from aios_grpc.service.tls import _check_with_ssl

    good = ca.issue("server", tmp_path)
    _check_with_ssl(good.cert_bytes(), good.key_bytes(), "C", "K")
    with pytest.raises(ConfigurationError, match="not a matching key and certificate"):
        _check_with_ssl(good.cert_bytes(), write_key(tmp_path / "x.key").read_bytes(), "C", "K")


def test_the_cli_prints_one_line_for_a_cert_without_key(spawn: Any, ca: Authority, tmp_path: Path) -> None:
    import subprocess
    import sys

    good = ca.issue("server", tmp_path)
    env = {**os.environ, "AIOS_TLS_CERT_FILE": str(good.cert), "AIOS_PORT": "0", "AIOS_METRICS_PORT": "-1"}
    proc = subprocess.run(
        [sys.executable, "-m", "aios_grpc", "serve", "tests.blocks.basic:EchoBlock"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["aios-grpc: AIOS_TLS_CERT_FILE is set without AIOS_TLS_KEY_FILE"], (
        proc.stderr
    )


def test_metrics_host_binds_the_metrics_endpoint_apart_from_the_grpc_host(serve: Any) -> None:
    served = serve(EchoBlock, metrics_host="127.0.0.2", metrics_port=0)
    endpoint = served.server.telemetry.endpoint
    assert endpoint.host == "127.0.0.2"
    with urllib.request.urlopen(f"http://127.0.0.2:{endpoint.port}/metrics", timeout=10) as answer:
        assert answer.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10)


def test_the_health_command_checks_a_mutual_tls_port(serve: Any, ca: Authority, tmp_path: Path) -> None:
    import subprocess
    import sys

    server = ca.issue("server", tmp_path / "server")
    ca_file = ca.write(tmp_path)
    served = serve(
        EchoBlock, tls_cert_file=str(server.cert), tls_key_file=str(server.key), tls_client_ca_file=str(ca_file)
    )
    probe = ca.issue("probe", tmp_path / "probe", client=True)

    def health(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "aios_grpc", "health", served.address, "--timeout", "10", *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    ok = health("--cacert", str(ca_file), "--cert", str(probe.cert), "--key", str(probe.key))
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stdout + ok.stderr
    assert health("--cacert", str(ca_file)).returncode == 1  # no client certificate
    assert health().returncode == 1  # plaintext
