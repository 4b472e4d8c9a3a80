"""Draw the benchmarks' JSON results (``--json FILE`` of each bench script) into one PNG and a table.

Usage:
  .venv/bin/python bench/plot.py --run            # run the benchmarks below, then draw (a few minutes)
  .venv/bin/python bench/plot.py RESULT.json ...  # draw results written earlier

``--run`` runs ``stream_throughput.py``, ``coalescing.py`` and ``latency_low_load.py``
with ``--json`` into ``bench/results/``, then draws ``docs/benchmarks.png`` (one panel per
benchmark: packets/s for throughput, p50/p90/p99 for latency) and writes the same figures
as a Markdown table into ``docs/scheduler.md`` between ``<!-- bench:begin -->`` and
``<!-- bench:end -->``. Sizes are the ``--packets``/``--rounds`` given (defaults below,
small enough for a shared two-core machine; the figures say what that machine did, not
what a server can do).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PNG = ROOT / "docs" / "benchmarks.png"
DOC = ROOT / "docs" / "scheduler.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# What --run runs: the bench script and its arguments.
RUNS = {
    "stream_throughput": ["--packets", "6000", "--rounds", "3"],
    "coalescing": ["--packets", "6000", "--rounds", "3"],
    "latency_low_load": ["--packets", "300"],
}
TITLES = {
    "stream_throughput": "Process streams: aios-grpc vs a bare grpc.aio server",
    "coalescing": "Client coalescing (4 streams)",
    "latency_low_load": "Latency, one packet at a time",
    "tracing_cost": "Telemetry cost",
    "batching_torch": "Served torch MLP",
    "redis_ingress": "Redis Stream ingress",
}
RATES = ("packets_per_s", "msg_per_s")
LATENCIES = ("p50_ms", "p90_ms", "p99_ms")


def run_benchmarks() -> list[Path]:
    """Run each of ``RUNS`` with ``--json`` into bench/results/; the files written."""
    RESULTS.mkdir(exist_ok=True)
    written = []
    for name, extra in RUNS.items():
        out = RESULTS / f"{name}.json"
        print(f"[plot] running bench/{name}.py {' '.join(extra)}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *extra, "--json", str(out)], check=True)
        written.append(out)
    return written


def _kind(summary: dict[str, dict[str, float]]) -> tuple[str, list[str]]:
    """("rate", [the rate field]) or ("latency", [p50, p90, p99]) for a benchmark's summary rows."""
    fields = {k for row in summary.values() for k in row}
    for rate in RATES:
        if rate in fields:
            return "rate", [rate]
    return "latency", [f for f in LATENCIES if f in fields]


def draw(results: list[dict[str, Any]], png: Path) -> None:
    """One panel per benchmark: horizontal bars of its summary rows."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.2 + 1.9 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        summary = result["summary"]
        kind, fields = _kind(summary)
        labels = list(summary)
        height = 0.8 / len(fields)
        for i, field in enumerate(fields):
            values = [summary[label].get(field, 0.0) for label in labels]
            positions = [y + (i - (len(fields) - 1) / 2) * height for y in range(len(labels))]
            bars = ax.barh(positions, values, height=height, label=field.removesuffix("_ms"))
            ax.bar_label(bars, fmt="%.0f" if kind == "rate" else "%.2f", padding=3, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("packets/s (higher is better)" if kind == "rate" else "ms (lower is better)", fontsize=8)
        machine = result.get("machine", {})
        ax.set_title(
            f"{TITLES.get(result['bench'], result['bench'])}  ({machine.get('cpus', '?')} CPUs, "
            f"load {machine.get('load_before', 0):.1f}, {result.get('started', '')[:10]})",
            fontsize=9,
        )
        if kind == "latency":
            ax.legend(fontsize=8, loc="lower right")
        ax.margins(x=0.18)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def table(results: list[dict[str, Any]]) -> str:
    """The summaries as one Markdown table per benchmark."""
    out = []
    for result in results:
        summary = result["summary"]
        fields = sorted({k for row in summary.values() for k in row}, key=lambda f: (f not in RATES, f))
        args = " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in result["args"].items()
            if v not in (None, False)
        )
        out.append(f"`bench/{result['bench']}.py {args}`, {result.get('started', '')}:\n")
        out.append("| | " + " | ".join(fields) + " |")
        out.append("|---|" + "---:|" * len(fields))
        for label, row in summary.items():
            cells = [f"{row[f]:,.0f}" if f in RATES else f"{row[f]:.2f}" if f in row else "" for f in fields]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def update_doc(text: str, doc: Path) -> None:
    """Put ``text`` between the markers of ``doc``."""
    content = doc.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} section")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", content, count=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="JSON results (--json of a bench script)")
    parser.add_argument("--run", action="store_true", help="run the benchmarks first (bench/results/)")
    parser.add_argument("--png", type=Path, default=PNG, help=f"picture to write (default {PNG.relative_to(ROOT)})")
    parser.add_argument("--doc", type=Path, default=None, help="Markdown file whose bench section gets the table")
    args = parser.parse_args()
    files = run_benchmarks() if args.run else args.files
    if not files:
        raise SystemExit("no results: give JSON files or --run")
    results = [json.loads(Path(f).read_text()) for f in files]
    draw(results, args.png)
    text = table(results) + f"\n![benchmarks]({args.png.name})\n"
    doc = args.doc or (DOC if args.run else None)
    if doc is not None:
        update_doc(text, doc)
    print(text)
    print(f"[plot] wrote {args.png}" + (f" and the table in {doc}" if doc else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
