"""The SDK's instructions per packet (bench/sdk_path.py --instructions) stay within the budget.

Budget: bench/instruction_budget.json; a figure more than 10% above it fails. Needs
valgrind (apt-get install valgrind; scripts/dev test installs it when it can).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUDGET = json.loads((ROOT / "bench" / "instruction_budget.json").read_text())
TOLERANCE = 1.10


@pytest.mark.timeout(900)
def test_instructions_per_packet_within_budget(tmp_path: Path) -> None:
    assert shutil.which("valgrind") is not None, (
        "valgrind is not on PATH: the instruction budget check needs it (apt-get install valgrind)"
    )
    out = tmp_path / "figures.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sdk_path.py"),
            "--instructions",
            "--packets",
            str(BUDGET["packets"]),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        timeout=840,
    )
    figures = json.loads(out.read_text())
    over = {
        block: (figures[block], limit)
        for block, limit in BUDGET["instructions_per_packet"].items()
        if figures[block] > limit * TOLERANCE
    }
    assert not over, f"instructions per packet over budget (+10%): {over}; budget {BUDGET}"
