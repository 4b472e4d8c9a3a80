"""The bench scripts report progress per round and write JSON that bench/plot.py draws."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_a_bench_script_reports_rounds_and_its_json_is_drawn_with_a_table(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    proc = subprocess.run(
        [sys.executable, "bench/latency_low_load.py", "--packets", "10", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[latency_low_load] round ")]
    assert len(progress) == 4, proc.stderr  # two rounds of two servers, each printed as it ends
    result = json.loads(out.read_text())
    assert result["bench"] == "latency_low_load" and len(result["rounds"]) == 4
    assert set(result["summary"]["on_data (no batcher)"]) == {"p50_ms", "p90_ms", "p99_ms"}

    doc = tmp_path / "doc.md"
    doc.write_text("# x\n<!-- bench:begin -->\nold\n<!-- bench:end -->\ntail\n")
    png = tmp_path / "bench.png"
    drawn = subprocess.run(
        [sys.executable, "bench/plot.py", str(out), "--png", str(png), "--doc", str(doc)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    assert "old" not in text and text.endswith("<!-- bench:end -->\ntail\n")
    assert "| on_data (no batcher) |" in text and "![benchmarks](bench.png)" in text
