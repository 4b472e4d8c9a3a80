"""The deployment files: the container's real command line serves the example block, the
manifests pass the Kubernetes schema, and they name only settings that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aios_grpc.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
# The Kubernetes version whose schema the manifests are checked against (kubernetes-validate
# ships the schemas, so the check runs offline).
K8S_VERSION = "1.30.0"


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile's final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    steps: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            steps = []  # a new stage: only the last one is the image
        steps.append((word.upper(), rest.strip()))
    return steps


def _exec_form(steps: list[tuple[str, str]], name: str) -> list[str]:
    """The JSON (exec) form of the last ``name`` instruction; the shell form fails the test."""
    found = [rest for word, rest in steps if word == name]
    assert found, f"deploy/Dockerfile has no {name}"
    value = json.loads(found[-1])  # shell form (not JSON) would wrap the server in /bin/sh
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return value


def _manifests(name: str = "kubernetes.yaml") -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def _deployment() -> dict[str, Any]:
    (deployment,) = [d for d in _manifests() if d["kind"] == "Deployment"]
    return deployment


def _container() -> dict[str, Any]:
    (container,) = _deployment()["spec"]["template"]["spec"]["containers"]
    return container


def _container_argv() -> list[str]:
    """What the kubelet runs: command replaces ENTRYPOINT; args replace CMD (dropped when only command is set)."""
    steps = _dockerfile()
    entrypoint, cmd = _exec_form(steps, "ENTRYPOINT"), _exec_form(steps, "CMD")
    container = _container()
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*entrypoint, *container.get("args", cmd)]


def _healthy(argv: list[str], port: int) -> bool:
    argv = [a.replace(":50051", f":{port}") for a in argv]
    argv[0] = str(BIN / argv[0])
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).returncode == 0


def test_the_container_command_line_serves_the_example_block(tmp_path: Path) -> None:
    steps = _dockerfile()
    argv = _container_argv()
    assert argv[:2] == ["aios-grpc", "serve"], argv
    # The image's working folder holds what COPY put there (the block module).
    workdir = [rest for word, rest in steps if word == "WORKDIR"][-1]
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, dest = rest.split()
            if dest.rstrip("/") == workdir.rstrip("/"):
                for source in sources:
                    shutil.copy(ROOT / source, tmp_path)
    env = {**os.environ, "PYTHONPATH": ""}
    for word, rest in steps:
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in rest.split()))
    for var in _container()["env"]:
        env[var["name"]] = var.get("value", "pod-0")  # valueFrom: the pod's name
    # Only the addresses differ from the pod's: loopback and free ports on a shared machine.
    env.update({"AIOS_HOST": "127.0.0.1", "AIOS_PORT": "0", "AIOS_METRICS_PORT": "0"})
    proc = subprocess.Popen(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    try:
        assert proc.stdout is not None
        port = None
        end = time.monotonic() + 60
        while port is None and time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            log.append(line)
            found = re.search(r"listening on [^ ]+:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port is not None, "the container's command did not start:\n" + "".join(log)
        # The image's HEALTHCHECK command, then the manifest's exec variant of liveness.
        healthcheck = json.loads([rest for word, rest in steps if word == "HEALTHCHECK"][-1].split(" CMD ", 1)[1])
        end = time.monotonic() + 60
        while not _healthy(healthcheck, port):
            assert time.monotonic() < end, "never SERVING:\n" + "".join(log)
            time.sleep(0.1)
        assert _healthy(["aios-grpc", "health", "127.0.0.1:50051", "--service", "aios.liveness"], port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("name", ["kubernetes.yaml", "hpa.yaml"])
def test_manifests_pass_the_kubernetes_schema(name: str) -> None:
    docs = _manifests(name)
    assert docs
    for doc in docs:
        # strict: a misspelt or misplaced field is an error, not silently dropped.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_schema_check_catches_a_misplaced_field() -> None:
    deployment = _deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_pod_runs_locked_down_and_probes_the_right_health_names() -> None:
    deployment = _deployment()
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    image = container["image"]
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert pod["terminationGracePeriodSeconds"] > float(env["AIOS_GRACE_PERIOD_S"])
    port = int(env["AIOS_PORT"])
    # Readiness on the block's health (""), liveness on what fails only when the process is wedged.
    assert container["readinessProbe"]["grpc"] == {"port": port}
    assert container["startupProbe"]["grpc"] == {"port": port}
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": "aios.liveness"}
    user = [rest for word, rest in _dockerfile() if word == "USER"]
    assert user and not user[-1].startswith(("0", "root")), user
    kinds = {d["kind"]: d for d in _manifests()}
    assert kinds["PodDisruptionBudget"]["spec"]["selector"] == deployment["spec"]["selector"]
    services = [d for d in _manifests() if d["kind"] == "Service"]
    assert all(p["appProtocol"] == "grpc" for s in services for p in s["spec"]["ports"])
    assert any(s["spec"].get("clusterIP") == "None" for s in services)


def test_the_build_context_leaves_out_the_virtualenv_and_git() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git"} <= ignored


def _aios_vars(text: str) -> set[str]:
    return set(re.findall(r"\bAIOS_[A-Z0-9_]+\b", text))


def test_every_aios_variable_in_deploy_files_is_a_setting() -> None:
    fields = {f"AIOS_{name.upper()}" for name in Settings.model_fields}
    for path in DEPLOY.iterdir():
        unknown = _aios_vars(path.read_text()) - fields
        assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"
