"""The ``aios-grpc`` command: serve (and its errors) and the health probe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from aios_grpc_client import BlockClient

from tests.conftest import ROOT


def aios(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Metrics on a free port: a test must not depend on the default port being free.
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOS_METRICS_PORT": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "aios_grpc", *args], cwd=ROOT, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("aios-grpc: ")
    for text in expected:
        assert text in lines[0]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("no_such_module:Block", "cannot import module 'no_such_module': ModuleNotFoundError"),
        ("tests.blocks.basic:NoSuchClass", "module 'tests.blocks.basic' has no attribute 'NoSuchClass'"),
        ("tests.blocks.basic:json", "'tests.blocks.basic:json' is a module, not a class"),
        ("examples/missing.py:SimpleBlock", "file examples/missing.py does not exist"),
        ("just_a_name", "must look like MODULE:CLASS or path/to/file.py:CLASS"),
    ],
)
def test_serve_with_a_block_that_cannot_be_imported(ref, expected):
    assert_one_line_error(aios("serve", ref), expected)


def test_serve_with_a_module_that_raises_on_import(tmp_path):
    (tmp_path / "broken_block.py").write_text("raise RuntimeError('no model file')\n")
    proc = aios("serve", f"{tmp_path}/broken_block.py:Block")
    assert_one_line_error(proc, "RuntimeError: no model file")


def test_serve_with_a_block_whose_init_raises(tmp_path):
    (tmp_path / "init_fails.py").write_text(
        "class Block:\n"
        "    def __init__(self, context):\n"
        "        raise RuntimeError('model file missing')\n"
        "    def on_data(self, entry):\n"
        "        return True, None\n"
    )
    proc = aios("serve", f"{tmp_path}/init_fails.py:Block", "--port", "0", env={"AIOS_METRICS_PORT": "0"})
    assert proc.returncode == 2
    # The traceback into the block's code is logged; the last line says what stopped the server.
    assert 'init_fails.py", line 3, in __init__' in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "aios-grpc: Block.__init__ raised RuntimeError: model file missing"


def test_serve_with_a_class_that_is_not_a_block(tmp_path):
    (tmp_path / "not_a_block.py").write_text("class Thing:\n    def __init__(self, context):\n        pass\n")
    proc = aios("serve", f"{tmp_path}/not_a_block.py:Thing", "--port", "0", env={"AIOS_METRICS_PORT": "0"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "aios-grpc: block class Thing defines neither on_data nor on_batch"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AIOS_PORT": "not-a-port"}, ["AIOS_PORT='not-a-port'", "valid integer"]),
        ({"AIOS_WORKERS": "0"}, ["AIOS_WORKERS='0'", "greater than or equal to 1"]),
        ({"AIOS_LOG_LEVEL": "loud"}, ["AIOS_LOG_LEVEL='loud'", "unknown log level"]),
        ({"BLOCK_INIT_PARAMETERS": "{not json"}, ["BLOCK_INIT_PARAMETERS='{not json'", "not valid JSON"]),
        ({"AIOS_BLOCK_DATA": "[1, 2]"}, ["AIOS_BLOCK_DATA='[1, 2]'", "valid dictionary"]),
    ],
)
def test_serve_with_a_bad_setting(env, expected):
    assert_one_line_error(aios("serve", "tests.blocks.basic:EchoBlock", env=env), "invalid settings", *expected)


def test_serve_on_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = aios("serve", "tests.blocks.basic:EchoBlock", "--port", str(port))
    # One line: no gRPC core log, no drain log of a server that never served.
    assert_one_line_error(proc, f"cannot bind 127.0.0.1:{port}: address already in use (AIOS_PORT")


def test_serve_on_a_host_that_does_not_resolve():
    proc = aios("serve", "tests.blocks.basic:EchoBlock", "--host", "no-such-host.invalid", "--port", "0")
    assert_one_line_error(proc, "cannot bind no-such-host.invalid:0: the host does not resolve (AIOS_HOST or --host")


def test_serve_with_the_metrics_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = aios("serve", "tests.blocks.basic:EchoBlock", "--port", "0", env={"AIOS_METRICS_PORT": str(port)})
    assert_one_line_error(proc, f"cannot serve metrics on 127.0.0.1:{port} (AIOS_METRICS_PORT)")


def test_block_health_server_with_a_policy_that_is_not_json():
    proc = aios("block-health-server", "--port", "0", "--policy", '{"class": oops}')
    assert_one_line_error(proc, "--policy", "not valid JSON")


def test_serve_the_example_file_answers_a_packet(spawn):
    server = spawn("examples/simple_block.py:SimpleBlock", env={"AIOS_BLOCK_INIT_PARAMETERS": '{"threshold": 0.95}'})
    with BlockClient(server.address) as client:
        client.wait_until_serving(30)
        assert client.run({"value": 0.9}).data == {"value": 0.9, "passed": False}
        assert client.get_info()["block_class"] == "simple_block:SimpleBlock"


def test_serve_options_override_the_environment(spawn):
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_PORT": "1", "AIOS_WORKERS": "1"},
                   args=["--port", "0", "--workers", "3"])  # fmt: skip
    with BlockClient(server.address) as client:
        client.wait_until_serving(30)
        assert client.run({"a": 1}).data == {"echo": {"a": 1}}


def test_health_exits_zero_when_serving(serve):
    served = serve(__import__("tests.blocks.basic", fromlist=["EchoBlock"]).EchoBlock)
    proc = aios("health", served.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{served.address}: SERVING"
    named = aios("health", served.address, "--service", "aios.block.v1.BlockService")
    assert named.returncode == 0
    assert named.stdout.strip() == f"{served.address} service 'aios.block.v1.BlockService': SERVING"


def test_health_of_an_unknown_service_fails_with_a_reason(serve):
    from tests.blocks.basic import EchoBlock

    served = serve(EchoBlock)
    proc = aios("health", served.address, "--service", "no.such.Service")
    assert proc.returncode == 1
    out = (proc.stdout + proc.stderr).strip()
    assert len(out.splitlines()) == 1 and "NOT_FOUND" in out


def test_health_when_the_server_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the probe: nothing listens there
    proc = aios("health", f"127.0.0.1:{port}", "--timeout", "2")
    assert proc.returncode == 1
    out = (proc.stdout + proc.stderr).strip()
    assert len(out.splitlines()) == 1 and "UNAVAILABLE" in out and "Traceback" not in out


def test_health_reports_not_serving_during_a_slow_init_then_serving(spawn):
    server = spawn("tests.blocks.basic:SlowInitBlock", env={"AIOS_BLOCK_INIT_PARAMETERS": '{"init_s": 3}'})
    starting = aios("health", server.address)
    assert starting.returncode == 1
    assert starting.stdout.strip() == f"{server.address}: NOT_SERVING"
    with BlockClient(server.address) as client:
        client.wait_until_serving(30)
    assert aios("health", server.address).returncode == 0


def test_help_lists_both_commands():
    proc = aios("--help")
    assert proc.returncode == 0 and "serve" in proc.stdout and "health" in proc.stdout


def test_version():
    from aios_grpc._version import __version__

    proc = aios("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"aios-grpc {__version__}"


def test_a_bad_flag_is_reported_by_its_flag_not_its_variable():
    assert_one_line_error(
        aios("serve", "tests.blocks.basic:EchoBlock", "--workers", "0"), "--workers=0", "greater than or equal to 1"
    )
    assert_one_line_error(aios("serve", "tests.blocks.basic:EchoBlock", "--log-level", "LOUD"), "--log-level='LOUD'")


def test_serve_metrics_port_and_log_level_flags(spawn):
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_METRICS_PORT": "1", "AIOS_LOG_LEVEL": "WARNING"},
                   args=["--metrics-port", "-1", "--log-level", "DEBUG"])  # fmt: skip
    with BlockClient(server.address) as client:
        client.wait_until_serving(30)
        assert client.run({"a": 1}).ok
    server.proc.terminate()
    server.proc.wait(30)
    rest = server.rest_of_log()
    assert "metrics on http" not in rest  # -1: no endpoint (AIOS_METRICS_PORT=1 would fail to bind)
    assert " DEBUG aios_grpc.server: gc: " in rest  # the flag wins over AIOS_LOG_LEVEL


def test_an_unknown_aios_variable_is_warned_with_the_closest_name(spawn):
    server = spawn("tests.blocks.basic:EchoBlock", env={"AIOS_PROT": "5"})
    assert "WARNING aios_grpc.server: AIOS_PROT is not a setting and is ignored; did you mean 'AIOS_PORT'?" in "".join(
        server.log
    )


def test_block_run_reports_start_up_errors_in_one_line_like_the_cli(tmp_path):
    script = tmp_path / "serve_it.py"
    script.write_text(
        "from aios_grpc import Block\n"
        "class Bad:\n"
        "    def __init__(self, context):\n"
        "        raise RuntimeError('model file missing')\n"
        "    def on_data(self, entry):\n"
        "        return True, None\n"
        "Block(Bad, port=0, metrics_port=-1, log_level='CRITICAL').run()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "Bad.__init__ raised RuntimeError: model file missing")
