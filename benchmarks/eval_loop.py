"""Evaluation loop images/s vs a bare onnxruntime InferenceSession.run loop over the same
preprocessed inputs (target >= 0.9x), on the demo detector's exported ONNX and the demo val
split. Run it after `snakemake --cores all` (it reads that sweep's outputs):

    python benchmarks/eval_loop.py [--root DIR] [--cell demo-torch/torch2.13/opset13]
"""
import argparse
import json
import time
from pathlib import Path

from quantsweep.backends.onnxruntime import runner
from quantsweep.config import load_config
from quantsweep.evaluate.loop import evaluate_runner
from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images

ap = argparse.ArgumentParser()
ap.add_argument("--root", type=Path, default=Path("."))
ap.add_argument("--cell", default="demo-torch/torch2.13/opset13")
a = ap.parse_args()
cfg = load_config(a.root / "config" / "config.yaml")
model_name = a.cell.split("/")[0]
spec = {"name": model_name, **cfg["models"][model_name]}
model = a.root / cfg["results_dir"] / a.cell / "export" / "model.onnx"
manifest_path = a.root / "resources" / "datasets" / cfg["dataset"]["name"] / "manifest.json"
if not model.exists() or not manifest_path.exists():
    raise SystemExit(f"{model} or {manifest_path} missing: run `snakemake --cores all` first")
man = json.loads(manifest_path.read_text())
r = runner(model, {"threads": cfg["evaluate"]["threads"]})
images = val_images(man, "val", None)
feeds = [build_feeds([x], [m], spec["inputs"]) for _, x, m in iter_preprocessed(images, spec["preprocess"])]
feeds = [r.adapt(f) for f in feeds]  # cast to the binding dtypes up front: the bare loop does nothing else
t = time.perf_counter()
for f in feeds:
    r.session.run(None, f)
bare = len(feeds) / (time.perf_counter() - t)
_, stats = evaluate_runner(r, spec, man, cfg["evaluate"])
print(f"{model}: {len(images)} images, {cfg['evaluate']['threads']} ORT thread(s)")
print(f"bare session.run: {bare:.1f} img/s   eval loop (JPEG decode + preprocess prefetched in a "
      f"thread, decode, COCO records): {stats['images_per_s']:.1f} img/s   "
      f"ratio {stats['images_per_s'] / bare:.2f}x (target >= 0.9x)")
