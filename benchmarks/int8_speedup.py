"""INT8 (QDQ) vs FP32 latency on ONNX Runtime's CPU provider, side by side in one process:
the quantized graphs of the sweep against their FP32 siblings, the same preprocessed val
images, runs interleaved (so load on the machine hits both alike). Target in issue 6: >= 1.5x.
Run it after `snakemake --cores all` (it reads that sweep's outputs):

    python benchmarks/int8_speedup.py [--root DIR] [--threads 1] [--images 50] [--rounds 3]
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from quantsweep.backends.onnxruntime import runner
from quantsweep.config import load_config
from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images

ap = argparse.ArgumentParser()
ap.add_argument("--root", type=Path, default=Path("."))
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--images", type=int, default=50)
ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()
cfg = load_config(a.root / "config" / "config.yaml")
results = a.root / cfg["results_dir"]
man = json.loads((a.root / "resources/datasets" / cfg["dataset"]["name"] / "manifest.json").read_text())
images = val_images(man, "val", a.images)

pairs = []
for q in sorted(results.glob("*/*/opset*/*/quantize/status.json")):
    rec = json.loads(q.read_text())
    if rec["status"] != "ok" or not rec["data"].get("int8"):
        continue
    model, toolset, opset, quantizer = q.parts[-6:-2]
    fp32 = results / model / toolset / opset / "export" / "model.onnx"
    pairs.append((f"{model}/{toolset}/{opset}/{quantizer}", model, fp32, Path(rec["artifacts"]["model"])))
if not pairs:
    raise SystemExit(f"no quantized model under {results}: run `snakemake --cores all` first")


def timed(r, feeds) -> float:
    t = time.perf_counter()
    for f in feeds:
        r.session.run(None, f)
    return (time.perf_counter() - t) / len(feeds) * 1000


print(f"{len(images)} val images, {a.threads} ORT thread(s), {a.rounds} interleaved rounds; "
      f"median ms/image")
print(f"{'cell':58s} {'fp32':>8s} {'int8':>8s} {'speedup':>8s}")
for name, model, fp32, int8 in pairs:
    spec = {"name": model, **cfg["models"][model]}
    r32, r8 = runner(fp32, {"threads": a.threads}), runner(int8, {"threads": a.threads})
    raw = [build_feeds([x], [m], spec["inputs"]) for _, x, m in iter_preprocessed(images, spec["preprocess"])]
    f32, f8 = [r32.adapt(f) for f in raw], [r8.adapt(f) for f in raw]
    timed(r32, f32[:3]), timed(r8, f8[:3])  # warm-up
    t32, t8 = [], []
    for _ in range(a.rounds):
        t32.append(timed(r32, f32))
        t8.append(timed(r8, f8))
    m32, m8 = statistics.median(t32), statistics.median(t8)
    print(f"{name:58s} {m32:8.2f} {m8:8.2f} {m32 / m8:7.2f}x")
