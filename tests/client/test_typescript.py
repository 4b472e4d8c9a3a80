"""The TypeScript client (clients/typescript): installed from its lock file, generated code current, npm test green.

``npm test`` starts its own served blocks (``aios-grpc serve`` with this Python) and runs
the client against them with node's test runner.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TS = ROOT / "clients" / "typescript"
BUF = Path(sys.executable).parent / "buf"


def _npm() -> str:
    npm = shutil.which("npm")
    assert npm, "the TypeScript client's tests need node >= 20 and npm on PATH"
    return npm


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``npm ci`` from the committed package-lock.json, once per change of the lock file."""
    lock = (TS / "package-lock.json").read_bytes()
    stamp = TS / "node_modules" / ".aios-lock-sha256"
    digest = hashlib.sha256(lock).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        proc = subprocess.run(
            [_npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TS, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        stamp.write_text(digest)
    return TS / "node_modules"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generated_typescript_does_not_drift_from_protos(node_modules, tmp_path):
    assert BUF.exists(), "buf comes from the buf-bin package in the dev dependency group"
    proc = subprocess.run(
        [str(BUF), "generate", "--output", str(tmp_path)], cwd=TS, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh, committed = _files(tmp_path / "src" / "gen"), _files(TS / "src" / "gen")
    assert sorted(fresh) == sorted(committed), "run: (cd clients/typescript && npm run generate)"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"clients/typescript/src/gen is stale for {changed}; run: npm run generate"


def test_npm_test_passes_against_served_blocks(node_modules):
    env = {**os.environ, "AIOS_PYTHON": sys.executable, "AIOS_REPO_ROOT": str(ROOT)}
    proc = subprocess.run([_npm(), "test"], cwd=TS, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout
