"""pycocotools vs faster-coco-eval on the demo val split (same detections, interleaved repeats),
and the COCO scoring's share of a cell's wall time. Run it after `snakemake --cores all`:

    python benchmarks/coco_engines.py [--root DIR] [--cell demo-torch/torch2.13/opset13/none/fp32/onnxruntime]
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from quantsweep.config import load_config
from quantsweep.evaluate.coco import score_detections
from quantsweep.status import stage_status

ap = argparse.ArgumentParser()
ap.add_argument("--root", type=Path, default=Path("."))
ap.add_argument("--cell", default="demo-torch/torch2.13/opset13/none/fp32/onnxruntime")
ap.add_argument("--repeats", type=int, default=5)
a = ap.parse_args()
cfg = load_config(a.root / "config" / "config.yaml")
results = a.root / cfg["results_dir"]
dets = results / a.cell / "evaluate" / "detections.json"
manifest = a.root / "resources" / "datasets" / cfg["dataset"]["name"] / "manifest.json"
if not dets.exists() or not manifest.exists():
    raise SystemExit(f"{dets} or {manifest} missing: run `snakemake --cores all` first")
ann = json.loads(manifest.read_text())["splits"]["val"]["annotations"]
if not Path(ann).is_absolute():
    ann = str(a.root / ann)
detections = json.loads(dets.read_text())

times: dict[str, list[float]] = {"pycocotools": [], "faster-coco-eval": []}
for _ in range(a.repeats):
    for engine in times:
        t0 = time.perf_counter()
        m = score_detections(detections, ann, engine=engine)
        times[engine].append(time.perf_counter() - t0)
ref, fast = (statistics.median(times[e]) for e in times)
print(f"{len(detections)} detections on {m['n_images']} images, median of {a.repeats}:")
print(f"  pycocotools       {ref * 1000:8.1f} ms")
print(f"  faster-coco-eval  {fast * 1000:8.1f} ms")
print(f"  ratio pycocotools / faster-coco-eval: {ref / fast:.2f}x")

axes = dict(zip(("model", "toolset", "opset", "quantizer", "precision", "backend"),
                a.cell.replace("opset", "", 1).split("/"), strict=True))
stages = {}
for stage in ("export", "quantize", "build", "evaluate"):
    rec = stage_status(results, stage, **axes)
    if rec is not None:
        stages[stage] = rec["duration_s"]
total = sum(stages.values())
print(f"cell wall time {total:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in stages.items())}): "
      f"evaluate stage {stages.get('evaluate', 0) / total:.0%}, COCO scoring (pycocotools) "
      f"{ref / total:.1%}")
