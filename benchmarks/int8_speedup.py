"""INT8 (QDQ) vs FP32 latency on ONNX Runtime's CPU provider, side by side in one process:
the quantized graphs of a sweep against their FP32 siblings, the same preprocessed val images,
runs interleaved (so load on the machine hits both alike). Target (issue 6): >= 1.5x. One
figure per quantizer, e.g. ``int8_speedup.ort_qdq`` (the first model that has it). Run it
after a sweep (it reads that sweep's outputs):

    python benchmarks/int8_speedup.py [--root DIR] [--threads 1] [--images 50] [--rounds 3]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import emit, figure, unmeasured  # noqa: E402

GOAL = ">= 1.5"


def _timed(r: Any, feeds: list[Any]) -> float:
    t = time.perf_counter()
    for f in feeds:
        r.session.run(None, f)
    return (time.perf_counter() - t) / len(feeds) * 1000


def measure(root: Path, threads: int = 1, images: int = 50, rounds: int = 3,
            config: Path | None = None) -> list[dict[str, Any]]:
    config = config.resolve() if config else None
    with contextlib.chdir(root):  # a stage's artifacts are relative to its workflow's directory
        return _measure(Path.cwd(), threads, images, rounds, config)


def _measure(root: Path, threads: int, images: int, rounds: int,
             config: Path | None) -> list[dict[str, Any]]:
    from quantsweep.backends.onnxruntime import runner
    from quantsweep.config import load_config
    from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images
    from quantsweep.paths import stage_glob

    cfg = load_config(config or root / "config" / "config.yaml")
    results = root / cfg["results_dir"]
    man = json.loads((root / "resources/datasets" / cfg["dataset"]["name"] / "manifest.json").read_text())
    ims = val_images(man, "val", images)
    figs: dict[str, dict[str, Any]] = {}
    for q in sorted(results.glob(stage_glob("quantize"))):
        rec = json.loads(q.read_text())
        model, toolset, opset, quantizer = q.parts[-6:-2]
        name = quantizer.replace("-", "_")
        if rec["status"] != "ok" or not rec["data"].get("int8") or name in figs:
            continue
        fp32 = results / model / toolset / opset / "export" / "model.onnx"
        spec = {"name": model, **cfg["models"][model]}
        r32, r8 = runner(fp32, {"threads": threads}), runner(rec["artifacts"]["model"], {"threads": threads})
        raw = [build_feeds([x], [m], spec["inputs"]) for _, x, m in iter_preprocessed(ims, spec["preprocess"])]
        f32, f8 = [r32.adapt(f) for f in raw], [r8.adapt(f) for f in raw]
        _timed(r32, f32[:3]), _timed(r8, f8[:3])  # warm-up
        t32, t8 = [], []
        for _ in range(rounds):
            t32.append(_timed(r32, f32))
            t8.append(_timed(r8, f8))
        m32, m8 = statistics.median(t32), statistics.median(t8)
        figs[name] = figure("int8_speedup", name, m32 / m8, GOAL, cell=f"{model}/{toolset}/{opset}/{quantizer}",
                            fp32_ms=round(m32, 3), int8_ms=round(m8, 3), threads=threads,
                            images=len(raw), rounds=rounds)
    if not figs:
        return [unmeasured("int8_speedup", "ort_qdq", GOAL, f"no quantized graph under {results}: run a sweep first")]
    return list(figs.values())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    emit(measure(a.root, a.threads, a.images, a.rounds))
