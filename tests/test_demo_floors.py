"""The default demo, trained as configured, meets the accuracy floors on val in both contracts
and both evaluation paths (framework and ONNX Runtime FP32), which agree within 0.005 AP.
Real training (fixed steps), real Paddle + paddle2onnx 1.3.1, real torch export, pycocotools.
The full demo is needed here: the floors are a property of the configured training, which tiny
configs (2 steps) do not have. It trains on one thread (``demo.threads: 1``), not the default
config's two: the suite's other worker shares the cores, and a two-thread training beside it ran
3-5x slower (tests/conftest.py). The thread count changes the float summation order, so the
weights are not those of a two-thread run; the floors hold for both (2026-12-07, 160 px for the
first 800 steps: AP 0.471, AP50 0.768, APs 0.390 on two threads in 88 s; AP 0.496, AP50 0.809,
APs 0.443 here, training 141 s alone on one core). About 3.5 minutes on one core with native
bfloat16; on a CPU without it the default precision (auto) trains in float32, ~4x the time (an
AVX2-only EPYC, 2026-12-07: 1091 s of training beside the suite's other workers)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from conftest import ENVS, NO_LATENCY, REPO, snakemake, write_config

from quantsweep.config import load_config

FLOORS = {"AP": 0.45, "AP50": 0.70, "APs": 0.30}


def test_default_demo_meets_floors(tmp_path: Path):
    cfg = load_config(REPO / "config" / "config.yaml")
    cfg["envs_dir"] = str(ENVS)
    cfg["demo"]["threads"] = 1
    cfg["latency"] = dict(NO_LATENCY)  # the floors are about accuracy; latency is timed elsewhere
    cfg["matrix"] = [{"models": ["demo-paddle"], "toolsets": ["paddle2.6-p2o1.3"], "opsets": [13]},
                     {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]}]
    cfg["exclude"] = []
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    rows = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("model")
    for model in ("demo-paddle", "demo-torch"):
        row = rows.loc[model]
        assert row["status"] == "ok", row.to_dict()
        for key, floor in FLOORS.items():
            assert row[key] >= floor, (model, key, row[key])
        assert abs(row["AP_delta_vs_framework"]) <= 0.005, (model, row["AP_delta_vs_framework"])
        fw = json.loads((tmp_path / f"results/{model}/{row['toolset']}/framework/evaluate/"
                                   "metrics.json").read_text())
        for key, floor in FLOORS.items():
            assert fw[key] >= floor, (model, "framework", key, fw[key])
