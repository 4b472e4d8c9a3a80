"""aios-grpc-client installs on its own: a clean venv, ``pip install ./clients/python``, a real block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blocks.basic import EchoBlock
from tests.conftest import ROOT

CLIENT = ROOT / "clients" / "python"
# Distributions only the server needs: none may come with the client.
SERVER_ONLY = ("aios-grpc", "redis", "hiredis", "pydantic", "pydantic-settings", "prometheus-client", "torch")


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the client wheel (and what it depends on) installed, once per session."""
    base = tmp_path_factory.mktemp("client-venv")
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(CLIENT)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = wheels.glob("aios_grpc_client-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing from this checkout on the path: the venv's own site-packages only.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [str(venv / "bin" / "python"), *args], capture_output=True, text=True, timeout=60, env=env, cwd="/"
    )


def test_installed_alone_the_client_serves_a_block_and_brings_no_server_dependency(client_venv, serve):
    served = serve(EchoBlock, block_id="echo")
    script = (
        "import json, sys, aios_grpc_client, aios_block_stubs.v1.block_pb2 as pb\n"
        "from aios_grpc_client import BlockClient\n"
        "with BlockClient(sys.argv[1]) as c:\n"
        "    out = [r.data for r in c.process([{'n': 1}, {'n': 2}], session_id='s')]\n"
        "    print(json.dumps({'out': out, 'health': c.health(), 'info': c.get_info()['block_id'],\n"
        "                      'where': aios_grpc_client.__file__, 'stubs': pb.__file__}))\n"
    )
    proc = _run(client_venv, "-c", script, served.address)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["out"] == [{"echo": {"n": 1}}, {"echo": {"n": 2}}]
    assert seen["health"] == "SERVING" and seen["info"] == "echo"
    assert str(client_venv) in seen["where"] and str(client_venv) in seen["stubs"]

    listed = _run(client_venv, "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    names = {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}
    assert {"aios-grpc-client", "grpcio", "protobuf", "grpcio-health-checking"} <= names
    assert not [n for n in names if n in SERVER_ONLY or n.startswith("opentelemetry")], sorted(names)
