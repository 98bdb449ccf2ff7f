"""The benchmark figures' format: one JSON line per figure, a goal and whether it is met; a
figure that cannot be measured says why and carries no value (never a made-up number)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
figures = importlib.import_module("figures")


def test_a_figure_is_met_against_its_goal() -> None:
    assert figures.figure("decode_cost", "ratio", 0.06, "<= 0.1")["met"] is True
    assert figures.figure("decode_cost", "ratio", 0.16, "<= 0.1")["met"] is False
    f = figures.figure("eval_loop", "ratio", 0.97, ">= 0.95", images=200)
    assert f == {"benchmark": "eval_loop", "figure": "eval_loop.ratio", "value": 0.97,
                 "goal": ">= 0.95", "met": True, "images": 200}
    u = figures.unmeasured("analyze_cost", "ratio", "<= 5", "no analysed graph")
    assert u["value"] is None and u["met"] is None and u["reason"] == "no analysed graph"


def test_benchmarks_that_cannot_run_print_null_with_the_reason(tmp_path: Path) -> None:
    code = ("import sys, json; sys.path.insert(0, 'benchmarks')\n"
            "import decode_cost, eval_loop, analyze_cost, latency_agreement\n"
            "from pathlib import Path\n"
            "root = Path(sys.argv[1])\n"
            "(root / 'config').mkdir(); (root / 'config' / 'config.yaml').write_text("
            "(Path('config') / 'config.yaml').read_text())\n"
            "figs = decode_cost.measure(create_env=False) + eval_loop.measure(root)"
            " + analyze_cost.measure(root) + latency_agreement.measure(root)\n"
            "print(json.dumps(figs))\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True,
                       text=True, env={**__import__("os").environ,
                                       "QUANTSWEEP_TEST_ENVS": str(tmp_path / "no-envs")})
    assert r.returncode == 0, r.stderr[-2000:]
    figs = json.loads(r.stdout.strip().splitlines()[-1])
    by = {f["figure"]: f for f in figs}
    assert set(by) == {"decode_cost.ratio", "decode_cost.yolo_eval_loop_ratio", "eval_loop.ratio",
                       "analyze_cost.ratio", "latency_agreement.overlap"}
    for f in figs:
        assert f["value"] is None and f["met"] is None and f["reason"], f
    assert "ultra8.4" in by["decode_cost.ratio"]["reason"] and "not built" in by["decode_cost.ratio"]["reason"]
    assert "run a sweep first" in by["eval_loop.ratio"]["reason"]
    assert "no measured latency" in by["latency_agreement.overlap"]["reason"]


def test_two_latency_runs_agree_when_their_intervals_overlap() -> None:
    agreement = importlib.import_module("latency_agreement")
    a = {"latency_ci_low_ms": 10.0, "latency_ci_high_ms": 11.0}
    assert agreement.overlap(a, {"latency_ci_low_ms": 11.0, "latency_ci_high_ms": 12.0},
                             "latency_ci_low_ms", "latency_ci_high_ms")
    assert agreement.overlap(a, {"latency_ci_low_ms": 9.0, "latency_ci_high_ms": 12.0},
                             "latency_ci_low_ms", "latency_ci_high_ms")
    assert not agreement.overlap(a, {"latency_ci_low_ms": 11.2, "latency_ci_high_ms": 12.0},
                                 "latency_ci_low_ms", "latency_ci_high_ms")
    assert not agreement.overlap({"latency_ci_low_ms": 11.2, "latency_ci_high_ms": 12.0}, a,
                                 "latency_ci_low_ms", "latency_ci_high_ms")
