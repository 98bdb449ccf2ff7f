"""The ``latency`` stage: how fast a cell's graph runs, measured with the machine to itself.

Snakemake gives the job every core (``threads: workflow.cores``), so no other job runs beside
it. The cell's graph and its FP32 graph (the export) run on the same preprocessed val images,
after a warm-up, in interleaved rounds (each round times one pass of each graph over the
images), so that what slows one slows both. The row's latency is the median ms per image over
the rounds, with its IQR; its speedup is the median of the per-round FP32/cell ratios. The
evaluation's ``images_per_s`` stays a separate, labelled throughput."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from quantsweep.job import Job, Result, tool_call

CPU_BACKENDS = ("onnxruntime", "tensorrt_sim")  # what this stage times on this machine's CPU


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
                       rounds: int) -> dict[str, list[float]]:
    """``warmup`` one-feed passes of each, then ``rounds`` rounds, each timing one whole pass of
    every entry in turn (what slows one round slows all of its entries)."""
    for one_pass in passes.values():
        for _ in range(warmup):
            one_pass(1)
    out: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(rounds):
        for k, one_pass in passes.items():
            out[k].append(one_pass(None))
    return out


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
    with tool_call("runner_create", f"onnxruntime could not load {model} or {fp32}"):
        graphs = {"cell": runner(model, threads), "fp32": runner(fp32, threads)}
    passes = {k: pass_timer(partial(graphs[k].session.run, None), [graphs[k].adapt(f) for f in raw])
              for k in ("fp32", "cell")}
    with tool_call("inference", f"timing {model} against {fp32}"):
        rounds = interleaved_rounds(passes, int(opts["warmup"]), int(opts["rounds"]))
    cell, ref = spread(rounds["cell"]), spread(rounds["fp32"])
    ratio = statistics.median(f / c for f, c in zip(rounds["fp32"], rounds["cell"], strict=True))
    built = job.inputs["build"]
    return Result(backend=built.get("backend", ""), mode=built.get("mode", "measured"),
                  data={"latency_ms": round(cell["median"], 3),
                        "latency_iqr_ms": round(cell["iqr"], 3),
                        "fp32_latency_ms": round(ref["median"], 3),
                        "fp32_latency_iqr_ms": round(ref["iqr"], 3),
                        "speedup_vs_fp32": round(ratio, 3), "images": len(raw),
                        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
                        "threads": int(opts["threads"]), "graph": str(model), "fp32_graph": str(fp32)})
