"""The committed stubs in clients/python/aios_block_stubs/ match protos/, and the contract is buf-lint clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

GENERATED = ROOT / "clients" / "python" / "aios_block_stubs"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_stubs_do_not_drift_from_protos(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    fresh, committed = _files(tmp_path / "aios_block_stubs"), _files(GENERATED)
    assert sorted(fresh) == sorted(committed), "run: python scripts/gen_protos.py"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"clients/python/aios_block_stubs/ is stale for {changed}; run: python scripts/gen_protos.py"


def test_buf_lint_is_clean():
    buf = Path(sys.executable).parent / "buf"
    assert buf.exists(), "buf comes from the buf-bin package in the dev dependency group"
    proc = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_only_one_module_of_aios_grpc_imports_the_stubs():
    importers = [str(p.relative_to(ROOT)) for p in (ROOT / "aios_grpc").rglob("*.py") if "block_pb2" in p.read_text()]
    assert importers == ["aios_grpc/_pb.py"]
