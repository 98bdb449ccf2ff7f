"""Cost of the sensitivity analysis (the ``analyze`` stage) vs one evaluation of the same INT8
cell, measured side by side in one run on the quantized graphs a sweep already made (target
<= 5x), and how it grows with the number of quantized layers.

For each analysed graph (a ``.../<quantizer>/analyze/status.json`` under the results folder):
the analysis is run again from its quantize stage's graphs and the sweep's own parameters, then
the INT8 graph is evaluated once on the whole val split with the evaluation loop; both use the
same threads. The figure ``analyze_cost.ratio`` is the largest ratio; each graph's line has its
layers, seconds and the analysis seconds per quantized layer.

    python benchmarks/analyze_cost.py [--root .] [--config config/config.yaml ...] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import emit, figure, unmeasured  # noqa: E402

GOAL = "<= 5"


def measure(root: Path, config: list[Path] | None = None, threads: int = 2) -> list[dict[str, Any]]:
    config = [c.resolve() for c in config] if config else None
    with contextlib.chdir(root):  # a stage's artifacts are relative to its workflow's directory
        return _measure(Path.cwd(), config, threads)


def _measure(root: Path, config: list[Path] | None, threads: int) -> list[dict[str, Any]]:
    from quantsweep import analyze
    from quantsweep.backends import make_runner
    from quantsweep.config import load_config
    from quantsweep.evaluate.loop import evaluate_runner, model_class_names
    from quantsweep.job import Job
    from quantsweep.paths import stage_glob
    from quantsweep.status import read_status

    cfg = load_config(config or [root / "config" / "config.yaml"])
    results = root / cfg["results_dir"]
    manifest = root / "resources" / "datasets" / cfg["dataset"]["name"] / "manifest.json"
    found = sorted(results.glob(stage_glob("analyze")))
    if not found:
        return [unmeasured("analyze_cost", "ratio", GOAL, f"no analysed graph under {results}: run a "
                                                          "sweep with analyze: true first")]
    lines = []
    for st in found:
        model, toolset, opset, quantizer = st.parts[-6:-2]
        q = read_status(st.parent.parent / "quantize" / "status.json")
        if q["status"] != "ok":
            continue
        spec = {"name": model, **cfg["models"][model]}
        params = {"model_spec": spec, "backend": "onnxruntime", "quantizer": quantizer,
                  "evaluate": {**cfg["evaluate"], "threads": threads},
                  "dataset": {"manifest": str(manifest)}, "analyze": cfg["analyze"], "threads": threads}
        out = Path(tempfile.mkdtemp(prefix="analyze-cost-"))
        try:
            t0 = time.perf_counter()
            res = analyze.run(Job("analyze", str(st.parent), out, params, {"quantize": q}))
            t_an = time.perf_counter() - t0
            t0 = time.perf_counter()
            runner = make_runner("onnxruntime", q["artifacts"]["model"], {"threads": threads})
            dec = spec["decode"]
            names = model_class_names(q["artifacts"]["float_model"], dec) \
                if dec["label_map"] == "names" else None
            evaluate_runner(runner, spec, json.loads(manifest.read_text()), params["evaluate"], names)
            t_ev = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        d = res.data
        lines.append(figure("analyze_cost", "ratio", t_an / t_ev, GOAL,
                            graph=f"{model}/{toolset}/{opset}/{quantizer}", layers=d["quantized_layers"],
                            graphs_run=d["graphs_run"], analyze_s=round(t_an, 2), outputs_s=d["outputs_s"],
                            ap_s=d["ap_s"], eval_s=round(t_ev, 2), s_per_layer=round(t_an / d["quantized_layers"], 3)))
    if not lines:
        return [unmeasured("analyze_cost", "ratio", GOAL, "no analysed graph with an ok quantize stage")]
    return sorted(lines, key=lambda f: -f["value"])  # the worst first: the figure's value


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--config", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    emit(measure(a.root, a.config, a.threads))
