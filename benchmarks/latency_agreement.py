"""Do two runs of the latency stage on an idle machine agree within their intervals? After a
sweep, every cell's latency job is run once more (`--forcerun latency`, nothing else pending)
and each cell's two 95% intervals of the median are compared: they agree when they overlap.
Figure: ``latency_agreement.overlap``, the fraction of timed cells whose two intervals of the
latency overlap (goal: all of them); the speedups' intervals are counted beside it.

    python benchmarks/latency_agreement.py [--root DIR] [--configfile FILE]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import emit, figure, unmeasured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL = ">= 1.0"


def timed_cells(results: Path) -> dict[str, dict[str, Any]]:
    """Each cell's latency data, by cell id, for the cells the stage measured."""
    from quantsweep.status import read_status
    from quantsweep.tree import cell_stage_statuses

    out = {}
    for cell, p in cell_stage_statuses(results, "latency").items():
        rec = read_status(p)
        if rec["status"] == "ok" and rec.get("mode") == "measured":
            out[cell] = rec["data"]
    return out


def overlap(a: dict[str, Any], b: dict[str, Any], low: str, high: str) -> bool:
    return bool(a[low] <= b[high] and b[low] <= a[high])


def measure(root: Path, config: Path | None = None) -> list[dict[str, Any]]:
    from quantsweep.config import load_config

    config = (config or root / "config" / "config.yaml").resolve()
    results = root / load_config(config)["results_dir"]
    first = timed_cells(results)
    if not first:
        return [unmeasured("latency_agreement", "overlap", GOAL, f"no measured latency under {results}")]
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                        str(root), "--configfile", str(config), "--cores", "2", "--quiet",
                        "--forcerun", "latency"], capture_output=True, text=True)
    if r.returncode != 0:
        return [unmeasured("latency_agreement", "overlap", GOAL, f"snakemake failed: {r.stderr[-600:]}")]
    second = timed_cells(results)
    both = sorted(set(first) & set(second))
    cells = []
    for c in both:
        a, b = first[c], second[c]
        cells.append({"cell": c, "ms": [a["latency_ms"], b["latency_ms"]],
                      "ci_ms": [[a["latency_ci_low_ms"], a["latency_ci_high_ms"]],
                                [b["latency_ci_low_ms"], b["latency_ci_high_ms"]]],
                      "rounds": [a["latency_rounds"], b["latency_rounds"]],
                      "latency_agree": overlap(a, b, "latency_ci_low_ms", "latency_ci_high_ms"),
                      "speedup_agree": overlap(a, b, "speedup_ci_low", "speedup_ci_high")})
    agree = sum(c["latency_agree"] for c in cells)
    return [figure("latency_agreement", "overlap", agree / len(cells), GOAL, cells=len(cells),
                   speedups_agree=sum(c["speedup_agree"] for c in cells), detail=cells)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="the swept workflow directory")
    ap.add_argument("--configfile", type=Path)
    a = ap.parse_args()
    emit(measure(a.root.resolve(), a.configfile))
