"""The latency stage's statistics: the order-statistics interval of a median (checked against
the binomial distribution it rests on), rounds added until the interval is narrow enough or the
limit is reached, significance of a speedup; the config keys that bound it; compare and the
report marking a speedup that the rounds cannot tell from 1.0x."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from quantsweep.config import ConfigError, validate_config
from quantsweep.latency import interleaved_rounds, median_ci, summarise, within_target
from quantsweep.report import speedup_text
from quantsweep.report.compare import pivot
from quantsweep.report.html import latency_rows


def _coverage(n: int, j: int) -> float:
    """P(x_(j) <= median <= x_(n+1-j)) for a continuous distribution: the number of samples
    below the median is Binomial(n, 1/2), and the interval misses when it is < j or > n-j."""
    return sum(math.comb(n, k) for k in range(j, n - j + 1)) / 2 ** n


@pytest.mark.parametrize("n", [3, 5, 6, 7, 8, 10, 15, 21, 40])
def test_median_interval_is_the_narrowest_with_95_percent_coverage(n: int) -> None:
    xs = [float(i) for i in range(1, n + 1)]  # x_(i) = i
    lo, hi, cov = median_ci(random.Random(n).sample(xs, n))
    j = int(lo)
    assert hi == n + 1 - j and cov == pytest.approx(_coverage(n, j))
    if n >= 6:
        assert cov >= 0.95 and _coverage(n, j + 1) < 0.95  # the next pair inward falls short
    else:
        assert (lo, hi) == (1, n) and cov < 0.95  # too few rounds for 95%: min..max, and says so


def test_median_interval_covers_the_median_as_often_as_it_says() -> None:
    rng = random.Random(0)
    n, trials, hits = 15, 4000, 0
    for _ in range(trials):  # lognormal round times around a true median of 10 ms
        lo, hi, cov = median_ci([10 * math.exp(rng.gauss(0, 0.1)) for _ in range(n)])
        hits += lo <= 10 <= hi
    assert abs(hits / trials - cov) < 0.02


def _passes(noise: float, speed: float, seed: int = 1):
    """Two fake graphs whose per-round times vary by ``noise`` (a fraction) around 10 ms and
    10 / speed ms."""
    rng = random.Random(seed)
    return {"fp32": lambda n=None: 10 * (1 + rng.uniform(-noise, noise)),
            "cell": lambda n=None: 10 / speed * (1 + rng.uniform(-noise, noise))}


def test_rounds_are_added_until_the_interval_is_narrow_enough_or_the_limit() -> None:
    quiet = interleaved_rounds(_passes(0.005, 2.0), 0, 7, 30, within_target(0.03))
    assert len(quiet["cell"]) == 7  # narrow at once: no round beyond the minimum
    noisy = interleaved_rounds(_passes(0.4, 2.0), 0, 7, 30, within_target(0.03))
    assert len(noisy["cell"]) == len(noisy["fp32"]) == 30  # never narrow enough: the limit
    s = summarise(noisy)
    assert s["latency_ci_rel"] > 0.03 and s["rounds"] == 30
    middle = interleaved_rounds(_passes(0.06, 2.0), 0, 7, 200, within_target(0.03))
    n = len(middle["cell"])
    assert 7 < n < 200 and summarise(middle)["latency_ci_rel"] <= 0.03
    assert summarise({k: v[:-1] for k, v in middle.items()})["latency_ci_rel"] > 0.03 or \
        summarise({k: v[:-1] for k, v in middle.items()})["speedup_ci_rel"] > 0.03  # stopped at once


def test_a_speedup_is_significant_only_when_its_interval_excludes_one() -> None:
    win = summarise(interleaved_rounds(_passes(0.05, 1.5), 0, 15))
    assert win["speedup_significant"] and win["speedup_ci_low"] > 1.0
    tie = summarise(interleaved_rounds(_passes(0.05, 1.0), 0, 15))
    assert not tie["speedup_significant"] and tie["speedup_ci_low"] <= 1.0 <= tie["speedup_ci_high"]
    for s in (win, tie):
        assert s["latency_ci_low_ms"] <= s["latency_ms"] <= s["latency_ci_high_ms"]


@pytest.mark.parametrize("latency,key", [({"target_ci": 0}, "latency.target_ci"),
                                         ({"target_ci": -0.01}, "latency.target_ci"),
                                         ({"max_rounds": 2}, "latency.max_rounds"),
                                         ({"rounds": 9, "max_rounds": 8}, "latency.max_rounds")])
def test_latency_bounds_that_make_no_sense_are_config_errors(latency: dict, key: str) -> None:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["latency"] = latency
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg, "config.yaml")


def _rows() -> pd.DataFrame:
    base = {"model": "m", "toolset": "t", "opset": 13, "precision": "int8", "status": "ok",
            "reason_class": "", "mode": "measured", "AP": 0.5, "latency_ms": 5.0,
            "latency_ci_low_ms": 4.9, "latency_ci_high_ms": 5.2, "latency_rounds": 9,
            "latency_stop": "target_ci", "gpu": None}
    return pd.DataFrame([
        {**base, "cell": "m/t/opset13/ort-qdq/int8/onnxruntime", "quantizer": "ort-qdq",
         "backend": "onnxruntime", "speedup_vs_fp32": 1.93, "speedup_ci_low": 1.85, "speedup_ci_high": 2.01},
        {**base, "cell": "m/t/opset13/modelopt-ptq/int8/onnxruntime", "quantizer": "modelopt-ptq",
         "backend": "onnxruntime", "speedup_vs_fp32": 1.02, "speedup_ci_low": 0.97,
         "speedup_ci_high": 1.06, "latency_rounds": 15, "latency_stop": "max_rounds"}])


def test_compare_and_report_mark_speedups_that_are_not_significant() -> None:
    t = pivot(_rows(), "speedup_vs_fp32")
    assert t.loc[("m", "t", 13), "ort-qdq/int8/onnxruntime"] == "1.9300"
    assert t.loc[("m", "t", 13), "modelopt-ptq/int8/onnxruntime"] == "1.0200 (n.s.)"
    rows = {r["cell"].split("/")[3]: r for r in latency_rows(_rows())}
    assert rows["ort-qdq"]["speedup vs FP32"] == "1.930x [1.850, 2.010]"
    assert rows["modelopt-ptq"]["speedup vs FP32"] == "1.020x not significant [0.970, 1.060]"
    assert rows["modelopt-ptq"]["stopped at"] == "max_rounds" and rows["modelopt-ptq"]["rounds"] == 15
    assert rows["ort-qdq"]["latency ms [95% CI]"] == "5.000 [4.900, 5.200]"
    # a summary from before the intervals: the bare speedup, never a made-up interval
    assert speedup_text({"speedup_vs_fp32": 1.5}) == "1.500x"
    assert list(itertools.islice(latency_rows(_rows().drop(columns=["latency_ci_low_ms"])), 1)) == []


def test_an_fp32_cell_is_timed_once_and_its_speedup_is_one(int8_sweep: Path) -> None:
    """An FP32 cell on ONNX Runtime runs its FP32 graph: the stage times that graph once (no
    second session of the same file), and its speedup is 1.0, not significant; an INT8 cell is
    timed against its FP32 graph round by round."""
    def latency(cell: str) -> dict:
        st = json.loads((int8_sweep / "results" / cell / "latency" / "status.json").read_text())
        assert st["status"] == "ok", st["message"]
        return st["data"]

    fp32 = latency("demo-torch/torch2.13/opset13/none/fp32/onnxruntime")
    assert fp32["fp32_is_cell"] is True and fp32["graph"] == fp32["fp32_graph"]
    assert fp32["rounds_ms"]["fp32"] == fp32["rounds_ms"]["cell"]
    assert fp32["speedup_vs_fp32"] == fp32["speedup_ci_low"] == fp32["speedup_ci_high"] == 1.0
    assert fp32["speedup_significant"] is False
    int8 = latency("demo-torch/torch2.13/opset13/ort-qdq/int8/onnxruntime")
    assert int8["fp32_is_cell"] is False and int8["graph"] != int8["fp32_graph"]
    assert int8["rounds_ms"]["fp32"] != int8["rounds_ms"]["cell"]
    assert len(int8["rounds_ms"]["fp32"]) == len(int8["rounds_ms"]["cell"]) == int8["latency_rounds"]
