"""Every benchmark, one JSON line per figure: {"benchmark", "figure", "value", "goal", "met"}.

A figure that cannot be measured (a missing toolset env, a stage that failed) prints
"met": null with the reason, never a value. `--quick` sizes everything to finish in <= 10 min
on 2 cores: one small sweep in a temporary folder (the default config's dataset and demo, the
demo-torch cells at FP32 and ORT INT8 with the analysis), then the benchmarks on its outputs;
last, its latency stage runs again and each cell's two intervals are compared.

    python benchmarks/run_all.py --quick [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from figures import emit, figure, unmeasured  # noqa: E402

DEMO_TRAIN_GOAL = "<= 120"


def sweep_config() -> dict[str, Any]:
    """The default config, its matrix cut to the demo-torch cells the benchmarks read."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["envs_dir"] = str(Path(os.environ.get("QUANTSWEEP_TEST_ENVS", REPO / ".envs")).resolve())
    cfg["matrix"] = [
        {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]},
        {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
         "quantizers": ["ort-qdq"], "precisions": ["int8"], "analyze": True},
    ]
    cfg["exclude"] = []
    return cfg


def run_sweep(root: Path) -> tuple[list[dict[str, Any]], Path]:
    root.mkdir(parents=True, exist_ok=True)
    cfg_path = root / "config" / "config.yaml"
    cfg_path.parent.mkdir(exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(sweep_config(), sort_keys=False))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                        str(root), "--configfile", str(cfg_path), "--cores", "2", "--quiet"],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t
    figs = []
    train = root / "resources" / "demo" / "train" / "status.json"
    rec = json.loads(train.read_text()) if train.exists() else {}
    if rec.get("status") == "ok":
        d = rec["data"]
        figs.append(figure("demo_train", "seconds", d["train_s"], DEMO_TRAIN_GOAL, steps=d["steps"],
                           batch_size=d["batch_size"], load_s=d["load_s"]))
    else:
        figs.append(unmeasured("demo_train", "seconds", DEMO_TRAIN_GOAL,
                               f"the demo's training did not end ok: {rec.get('message', 'no status')[:300]}"))
    if r.returncode != 0:
        figs.append(unmeasured("sweep", "seconds", "", f"snakemake failed: {r.stderr[-600:]}"))
    else:
        figs.append({"benchmark": "sweep", "figure": "sweep.seconds", "value": round(seconds, 1),
                     "goal": None, "met": None, "note": "the quick sweep itself (informational)"})
    return figs, cfg_path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="sizes that finish in <= 10 min on 2 cores")
    ap.add_argument("--keep", type=Path, help="run the sweep in this folder and keep it")
    a = ap.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="quantsweep-bench-"))
    figs, cfg = run_sweep(root)
    emit(figs)
    import analyze_cost
    import decode_cost
    import dryrun_scaling
    import eval_loop
    import int8_speedup
    import latency_agreement

    q = a.quick
    steps: list[tuple[str, str, str, Callable[[], list[dict[str, Any]]]]] = [
        ("analyze_cost", "ratio", analyze_cost.GOAL, lambda: analyze_cost.measure(root, [cfg])),
        ("eval_loop", "ratio", eval_loop.GOAL, lambda: eval_loop.measure(root, config=cfg, reps=5)),
        ("int8_speedup", "ort_qdq", int8_speedup.GOAL,
         lambda: int8_speedup.measure(root, images=30 if q else 50, rounds=5, config=cfg)),
        ("decode_cost", "ratio", decode_cost.GOAL,
         lambda: decode_cost.measure(20 if q else 40, (320,) if q else (320, 640), create_env=not q)),
        ("dryrun_scaling", "ratio", "<= 3", lambda: dryrun_scaling.measure(1 if q else 3)),
        ("latency_agreement", "overlap", latency_agreement.GOAL,
         lambda: latency_agreement.measure(root, cfg)),
    ]
    for bench, name, goal, fn in steps:
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - one benchmark that breaks is a null figure
            out = [unmeasured(bench, name, goal, f"{type(exc).__name__}: {exc}"[:600])]
        for f in out:
            f.setdefault("seconds", round(time.perf_counter() - t, 1))
        emit(out)
    if a.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
