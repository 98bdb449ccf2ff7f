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
from pathlib import Path

from quantsweep.job import Job, Result, tool_call

CPU_BACKENDS = ("onnxruntime", "tensorrt_sim")  # what this stage times on this machine's CPU


def _quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


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
    feeds = {k: [r.adapt(f) for f in raw] for k, r in graphs.items()}

    def one_pass(k: str, n: int | None = None) -> float:
        r, fs = graphs[k], feeds[k][:n]
        t0 = time.perf_counter()
        for f in fs:
            r.session.run(None, f)
        return (time.perf_counter() - t0) * 1000 / len(fs)

    with tool_call("inference", f"timing {model} against {fp32}"):
        for k in graphs:
            for _ in range(int(opts["warmup"])):
                one_pass(k, 1)
        rounds: dict[str, list[float]] = {"cell": [], "fp32": []}
        for _ in range(int(opts["rounds"])):
            for k in ("fp32", "cell"):
                rounds[k].append(one_pass(k))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    q = {k: _quartiles(v) for k, v in rounds.items()}
    ratio = statistics.median(f / c for f, c in zip(rounds["fp32"], rounds["cell"], strict=True))
    built = job.inputs["build"]
    return Result(backend=built.get("backend", ""), mode=built.get("mode", "measured"),
                  data={"latency_ms": round(med["cell"], 3),
                        "latency_iqr_ms": round(q["cell"][1] - q["cell"][0], 3),
                        "fp32_latency_ms": round(med["fp32"], 3),
                        "fp32_latency_iqr_ms": round(q["fp32"][1] - q["fp32"][0], 3),
                        "speedup_vs_fp32": round(ratio, 3), "images": len(raw),
                        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
                        "threads": int(opts["threads"]), "graph": str(model), "fp32_graph": str(fp32)})
