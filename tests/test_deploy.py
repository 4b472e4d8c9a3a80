"""The deployment files name only settings that exist and probe what the server serves."""

from __future__ import annotations

import re
from pathlib import Path

from aios_grpc.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _aios_vars(text: str) -> set[str]:
    return set(re.findall(r"\bAIOS_[A-Z0-9_]+\b", text))


def test_every_aios_variable_in_deploy_files_is_a_setting():
    fields = {f"AIOS_{name.upper()}" for name in Settings.model_fields}
    for path in (ROOT / "deploy").iterdir():
        unknown = _aios_vars(path.read_text()) - fields
        assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"


def test_probes_use_grpc_health_on_the_served_port():
    text = (ROOT / "deploy" / "kubernetes.yaml").read_text()
    port = re.search(r"AIOS_PORT, value: \"(\d+)\"", text)
    assert port is not None
    probes = re.findall(r"grpc: \{port: (\d+)", text)
    assert len(probes) == 3 and set(probes) == {port.group(1)}
    assert "service: aios.block.v1.BlockService" in text
