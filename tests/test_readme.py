"""The README's examples run as written.

Every fenced block whose info string is exactly ``bash`` or ``python`` is run here, as
written (only the address of the server is swapped for the test's own). A block that
shows output is fenced ``text``; one that needs what a test cannot have (a cluster's
Redis, the set-up command itself) is fenced ``bash no-run`` and listed in ``NOT_RUN``
with the reason, so no block is left out silently.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aios_grpc_client import BlockClient

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent

NOT_RUN = {
    "scripts/dev serve": "the set-up itself; CI runs it (.ci/run runs scripts/dev test)",
    "AIOS_REDIS_INGRESS_STREAM=jobs": "needs a cluster's Redis (redis:6379) and routing targets on 10.0.*.*",
    "block-health-server --redis redis://redis": "needs a cluster's Redis with instances' heartbeats",
    "AIOS_HTTP_PORT=8080": "a fixed port and curl; tests/service/test_http_endpoints.py runs the same calls",
    "class OnlyEven(Muxer):": "a muxer fragment, not a block; tests/runtime/test_custom_muxer.py runs the same muxer",
    "def test_threshold(aios_block):": "a test for pytest to collect; tests/test_pytest_plugin.py runs the same",
}


def _fences() -> list[tuple[str, str]]:
    """(info string, code) of every fenced block, indented ones included."""
    found = []
    for m in re.finditer(r"^( *)```([^\n]*)\n(.*?)^\1```", README, re.S | re.M):
        indent = len(m.group(1))
        code = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
        found.append((m.group(2).strip(), code))
    return found


def _runnable(language: str) -> list[str]:
    return [code for info, code in _fences() if info == language]


def _one(language: str, marker: str) -> str:
    (code,) = [c for c in _runnable(language) if marker in c]
    return code


RUNNERS = {
    "python": [
        "class Threshold:",
        "BlockTester(Threshold)",
        "block = BlockClient(",
        "with BlockClient(",
        "class Classifier:",
    ],
    "bash": ["BlockService/Process", "aios-grpc health"],
}


def test_every_bash_and_python_block_is_run_or_marked() -> None:
    for info, code in _fences():
        language = info.split()[0] if info else ""
        if info in RUNNERS:
            # The first runner marker that matches is the test that runs it.
            assert any(marker in code for marker in RUNNERS[info]), f"README {info} block run by no test:\n{code}"
            if info == "bash":
                # Usage notation is not a command: `[--flag VALUE]` in a runnable line.
                assert not re.search(r"\[--?\w", code), f"usage brackets in a runnable line:\n{code}"
        elif language in ("bash", "python", "sh"):
            if info.split()[1:] == ["no-run"]:
                assert sum(key in code for key in NOT_RUN) == 1, f"no-run block not listed in NOT_RUN:\n{code}"
            else:
                assert language == "sh", f"README block fenced {info!r}: use bash, python, text or 'bash no-run'"


def _python(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def my_block(tmp_path: Path) -> Path:
    """The README's minimal block saved as my_block.py, as the README says."""
    (tmp_path / "my_block.py").write_text(_one("python", "class Threshold:"))
    return tmp_path


def test_the_block_tester_example_prints_what_the_readme_shows(my_block: Path) -> None:
    out = _python(_one("python", "BlockTester(Threshold)"), my_block)
    shown = next(code for info, code in _fences() if info == "text" and "'passed'" in code)
    assert out == shown


def test_the_minimal_block_serves_under_its_own_main(my_block: Path) -> None:
    # `python my_block.py` runs Block(Threshold).run(); a start-up error ends it in one line, as the CLI's.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOS_PORT": str(port), "AIOS_METRICS_PORT": "-1"}
        proc = subprocess.run(
            [sys.executable, "my_block.py"], cwd=my_block, env=env, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "aios-grpc: " in line]
    assert "Traceback" not in proc.stderr
    assert len(errors) == 1 and errors[0].startswith(f"aios-grpc: cannot bind 127.0.0.1:{port}"), proc.stderr


def _serve_example(serve: Any) -> Any:
    from aios_grpc.loader import load_block_class

    return serve(load_block_class("examples/simple_block.py:SimpleBlock"))  # what `scripts/dev serve` serves


def _bash(code: str, address: str) -> str:
    code = code.replace("127.0.0.1:50051", address)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-e", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_grpcurl_block_runs_against_the_example(serve: Any) -> None:
    served = _serve_example(serve)
    out = _bash(_one("bash", "BlockService/Process"), served.address)
    assert '"data": "{\\"value\\": 0.9, \\"passed\\": true}"' in out
    assert '"data": "{\\"value\\": 0.1, \\"passed\\": false}"' in out
    assert "aios.block.v1.BlockService" in out and '"status": "SERVING"' in out
    assert '"threshold": 0.7' in out  # SetParameters, then Management get_threshold


def test_the_health_probe_lines_run(serve: Any) -> None:
    served = _serve_example(serve)
    out = _bash(_one("bash", "aios-grpc health"), served.address)
    assert out.splitlines() == [f"{served.address}: SERVING", f"{served.address} service 'aios.liveness': SERVING"]


def test_the_client_examples(serve: Any) -> None:
    served = _serve_example(serve)
    client_code = _one("python", "with BlockClient(").replace("127.0.0.1:50051", served.address)
    out = _python(client_code, ROOT).splitlines()
    assert out[:2] == ["1 True {'value': 0.9, 'passed': True}", "2 True {'value': 0.1, 'passed': False}"]
    assert out[2] == "{'threshold': 0.7} SERVING"
    # Several endpoints: made without connecting (the addresses are the README's examples).
    namespace: dict[str, Any] = {"BlockClient": BlockClient}
    exec(_one("python", "block = BlockClient("), namespace)
    namespace["block"].close()


def test_the_batching_example_is_a_working_block() -> None:
    from aios_grpc import BlockTester

    namespace: dict[str, Any] = {}
    exec("from aios_grpc import *\n" + _one("python", "class Classifier:"), namespace)
    assert BlockTester(namespace["Classifier"]).run({"x": 1}) == [{"n": 1}]
