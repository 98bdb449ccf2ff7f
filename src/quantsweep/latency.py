"""The ``latency`` stage: how fast a cell's graph runs, measured with the machine to itself.

Snakemake gives the job every core (``threads: workflow.cores``), so no other job runs beside
it. The cell's graph and its FP32 graph (the export) run on the same preprocessed val images,
after a warm-up, in interleaved rounds (each round times one pass of each graph over the
images), so that what slows one slows both. The row's latency is the median ms per image over
the rounds, with its IQR; its speedup is the median of the per-round FP32/cell ratios (a cell
whose graph is the FP32 graph is timed once, its speedup 1.0). The evaluation's
``images_per_s`` stays a separate, labelled throughput."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from quantsweep.job import Job, Result, tool_call

CPU_BACKENDS = ("onnxruntime", "tensorrt_sim")  # what this stage times on this machine's CPU


def timed_backends(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The backends whose cells get a latency stage: ``latency.backends`` of the config (all of
    CPU_BACKENDS by default; ``[]`` for a sweep that measures accuracy only)."""
    chosen = (cfg.get("latency") or {}).get("backends", CPU_BACKENDS)
    return tuple(b for b in CPU_BACKENDS if b in chosen)


def _quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def pass_timer(infer: Callable[[Any], Any], feeds: list[Any]) -> Callable[[int | None], float]:
    """A function timing one pass of ``infer`` over the first ``n`` feeds (all with None), in ms
    per feed."""
    def one_pass(n: int | None = None) -> float:
        fs = feeds[:n]
        t0 = time.perf_counter()
        for f in fs:
            infer(f)
        return (time.perf_counter() - t0) * 1000 / len(fs)

    return one_pass


def interleaved_rounds(passes: dict[str, Callable[[int | None], float]], warmup: int,
                       rounds: int, max_rounds: int | None = None,
                       enough: Callable[[dict[str, list[float]]], bool] | None = None,
                       ) -> dict[str, list[float]]:
    """``warmup`` one-feed passes of each, then rounds, each timing one whole pass of every
    entry in turn (what slows one round slows all of its entries): ``rounds`` of them, then
    more while ``enough`` (asked after each round) says no, up to ``max_rounds``."""
    for one_pass in passes.values():
        for _ in range(warmup):
            one_pass(1)
    out: dict[str, list[float]] = {k: [] for k in passes}
    limit = max(rounds, max_rounds or rounds)
    for n in range(1, limit + 1):
        for k, one_pass in passes.items():
            out[k].append(one_pass(None))
        if n >= rounds and (enough is None or enough(out)):
            break
    return out


def median_ci(xs: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the median from order statistics: the
    narrowest pair (x_(j), x_(n+1-j)) of the sorted values whose coverage, 1 - 2 P(B < j) with
    B ~ Binomial(n, 1/2), is at least ``confidence``. Returns (low, high, coverage); with fewer
    than 6 values no pair reaches 95%, and (min, max) comes with the coverage it has."""
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("no values")
    total = 2 ** n
    j, cov = 1, 1 - 2 / total  # (min, max)
    below = 1  # the sum of C(n, i) for i < j
    for jj in range(2, (n + 1) // 2 + 1):
        below += math.comb(n, jj - 1)
        c = 1 - 2 * below / total
        if c < confidence:
            break
        j, cov = jj, c
    return s[j - 1], s[n - j], cov


def rel_halfwidth(median: float, low: float, high: float) -> float:
    """How far the interval reaches from the median, as a fraction of it."""
    return max(median - low, high - median) / median if median > 0 else math.inf


def summarise(rounds: dict[str, list[float]], confidence: float = 0.95) -> dict[str, Any]:
    """The cell's latency and its speedup over the FP32 graph (medians of the rounds, and of
    the per-round ratios), each with its confidence interval; ``significant``: the speedup's
    interval does not contain 1.0 (a win, or a loss, that the rounds can tell from noise)."""
    cell, ref = rounds["cell"], rounds["fp32"]
    ratios = [f / c for f, c in zip(ref, cell, strict=True)]
    med, sp = statistics.median(cell), statistics.median(ratios)
    lo, hi, cov = median_ci(cell, confidence)
    slo, shi, _ = median_ci(ratios, confidence)
    return {"latency_ms": med, "latency_ci_low_ms": lo, "latency_ci_high_ms": hi,
            "latency_ci_rel": rel_halfwidth(med, lo, hi), "ci_coverage": cov,
            "fp32_latency_ms": statistics.median(ref), "speedup_vs_fp32": sp,
            "speedup_ci_low": slo, "speedup_ci_high": shi, "speedup_ci_rel": rel_halfwidth(sp, slo, shi),
            "speedup_significant": not (slo <= 1.0 <= shi), "rounds": len(cell)}


def within_target(target: float, confidence: float = 0.95) -> Callable[[dict[str, list[float]]], bool]:
    """Enough rounds: both the latency's and the speedup's interval reach no further than
    ``target`` (a fraction) from their medians."""
    def enough(rounds: dict[str, list[float]]) -> bool:
        s = summarise(rounds, confidence)
        return bool(s["latency_ci_rel"] <= target and s["speedup_ci_rel"] <= target)

    return enough


def with_reference(rounds: dict[str, list[float]]) -> dict[str, list[float]]:
    """The rounds with their FP32 entry: the cell's own when its graph is the FP32 graph."""
    return rounds if "fp32" in rounds else {**rounds, "fp32": rounds["cell"]}


def spread(ms: Iterable[float]) -> dict[str, float]:
    """The median and the interquartile range of per-round timings."""
    xs = list(ms)
    lo, hi = _quartiles(xs)
    return {"median": statistics.median(xs), "iqr": hi - lo}


def run(job: Job) -> Result:
    from quantsweep.backends.onnxruntime import runner
    from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images

    p = job.params
    opts = p["latency"]
    spec = p["model_spec"]
    model, fp32 = job.artifact("build", "model"), job.artifact("export", "model")
    manifest = json.loads(Path(p["dataset"]["manifest"]).read_text())
    images = val_images(manifest, "val", int(opts["images"]))
    raw = [build_feeds([x], [m], spec["inputs"]) for _, x, m in iter_preprocessed(images, spec["preprocess"])]
    threads = {"threads": int(opts["threads"])}
    # a cell whose graph is its FP32 graph (an FP32 cell on ONNX Runtime) is timed once: its
    # speedup is 1.0 by definition, never a measured (and not significant) ratio of noise
    same = Path(model).resolve() == Path(fp32).resolve()
    with tool_call("runner_create", f"onnxruntime could not load {model} or {fp32}"):
        graphs = {"cell": runner(model, threads)}
        if not same:
            graphs["fp32"] = runner(fp32, threads)
    passes: dict[str, Callable[[int | None], float]] = {  # fp32 first, then the cell
        k: pass_timer(partial(graphs[k].session.run, None), [graphs[k].adapt(f) for f in raw])
        for k in ("fp32", "cell") if k in graphs}
    target, max_rounds = float(opts["target_ci"]), int(opts["max_rounds"])
    check = within_target(target)
    with tool_call("inference", f"timing {model} against {fp32}"):
        rounds = with_reference(interleaved_rounds(
            passes, int(opts["warmup"]), int(opts["rounds"]), max_rounds,
            enough=lambda r: check(with_reference(r))))
    s = summarise(rounds)
    met = s["latency_ci_rel"] <= target and s["speedup_ci_rel"] <= target
    cell, ref = spread(rounds["cell"]), spread(rounds["fp32"])
    built = job.inputs["build"]
    return Result(backend=built.get("backend", ""), mode=built.get("mode", "measured"),
                  data={"latency_ms": round(s["latency_ms"], 3),
                        "latency_iqr_ms": round(cell["iqr"], 3),
                        "latency_ci_low_ms": round(s["latency_ci_low_ms"], 3),
                        "latency_ci_high_ms": round(s["latency_ci_high_ms"], 3),
                        "fp32_latency_ms": round(s["fp32_latency_ms"], 3),
                        "fp32_latency_iqr_ms": round(ref["iqr"], 3),
                        "speedup_vs_fp32": round(s["speedup_vs_fp32"], 3),
                        "speedup_ci_low": round(s["speedup_ci_low"], 3),
                        "speedup_ci_high": round(s["speedup_ci_high"], 3),
                        "speedup_significant": s["speedup_significant"],
                        "ci_coverage": round(s["ci_coverage"], 4), "target_ci": target,
                        "latency_rounds": s["rounds"],
                        # why the stage stopped adding rounds
                        "latency_stop": "target_ci" if met else "max_rounds",
                        "images": len(raw), "fp32_is_cell": same,
                        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
                        "threads": int(opts["threads"]), "graph": str(model), "fp32_graph": str(fp32)})
