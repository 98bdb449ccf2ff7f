"""Decode cost of the yolo layout: decoding + class-aware NMS per image vs ONNX Runtime inference
per image, for an Ultralytics YOLOv8n graph at 320 and 640 (target <= 0.1x); and the evaluation
loop on the YOLOv8n graph vs a bare InferenceSession.run loop over the same preprocessed inputs
(target >= 0.9x). The graphs are exported here at random init by Ultralytics in the toolset of
tests/test_real_detectors.py, with the class biases zeroed so that every one of the N candidates
passes the 0.001 confidence threshold and goes to NMS: the decoder's worst case.

    python benchmarks/decode_cost.py [--images 40]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_real_detectors import ULTRA_TOOLSET  # noqa: E402

from quantsweep.backends.onnxruntime import runner  # noqa: E402
from quantsweep.config import DEFAULT_CATEGORIES, validate_config  # noqa: E402
from quantsweep.dataset import generate_synthetic  # noqa: E402
from quantsweep.evaluate.decode import label_to_category, split_outputs, to_detections  # noqa: E402
from quantsweep.evaluate.loop import evaluate_runner  # noqa: E402
from quantsweep.evaluate.preprocess import (  # noqa: E402
    build_feeds,  # noqa: E402
    iter_preprocessed,
    val_images,
)
from quantsweep.toolsets import ensure_env  # noqa: E402

# the class-score biases zeroed: at random init Ultralytics' bias prior keeps every score below
# the 0.001 threshold (nothing to decode); with them at 0 every candidate goes to NMS
EXPORT = ("import shutil, sys, torch\nfrom ultralytics import YOLO\n"
          "m = YOLO('yolov8n.yaml')\n"
          "for seq in m.model.model[-1].cv3: torch.nn.init.zeros_(seq[-1].bias)\n"
          "f = m.export(format='onnx', opset=17, imgsz=int(sys.argv[1]))\n"
          "shutil.move(f, sys.argv[2])\n")

ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=40)
a = ap.parse_args()
tmp = Path(tempfile.mkdtemp(prefix="decode-cost-"))
env = ensure_env("ultra8.4", ULTRA_TOOLSET, os.environ.get("QUANTSWEEP_TEST_ENVS", REPO / ".envs"))
if env.status != "ok":
    raise SystemExit(f"toolset: {env.message[-2000:]}")
syn = {"seed": 0, "train": 0, "calib": 1, "val": a.images, "min_size": 320, "max_size": 640,
       "max_objects": 6, "empty_fraction": 0.05, "categories": DEFAULT_CATEGORIES}
man = generate_synthetic(syn, "bench", tmp / "data")
images = val_images(man, "val", None)
print(f"{len(images)} images; ONNX Runtime 1 thread; decode = yolo layout + NMS + COCO records")
for size in (320, 640):
    onnx_path = tmp / f"yolov8n_{size}.onnx"
    subprocess.run([env.python, "-c", EXPORT, str(size), str(onnx_path)], check=True, cwd=tmp,
                   capture_output=True, env={**os.environ, "YOLO_OFFLINE": "1",
                                             "YOLO_CONFIG_DIR": str(tmp / "ucfg")})
    model = {"source": "onnx", "path": str(onnx_path), "inputs": [{"name": "images"}],
             "decode": {"preset": "ultralytics-yolo", "label_map": "coco80"},
             "preprocess": {"resize": "letterbox", "size": [size, size], "scale": 1 / 255,
                            "mean": [0, 0, 0], "std": [1, 1, 1]}}
    cfg = validate_config({"dataset": {"name": "x", "source": "synthetic"},
                           "toolsets": {"t": {"packages": ["onnxruntime"]}}, "models": {"m": model},
                           "matrix": [{"models": ["m"], "toolsets": ["t"]}]})
    spec = {"name": "yolov8n", **cfg["models"]["m"]}
    ev = cfg["evaluate"]
    # as the evaluation decodes: NMS stops once the max_detections it scores are kept
    dec = {**spec["decode"], "nms": {**spec["decode"]["nms"], "max_det": ev["max_detections"]}}
    r = runner(str(onnx_path), {"threads": 1})
    pre = list(iter_preprocessed(images, spec["preprocess"]))
    feeds = [r.adapt(build_feeds([x], [m], spec["inputs"])) for _, x, m in pre]
    cats = label_to_category(dec["label_map"], man["categories"])
    t = time.perf_counter()
    outs = [r.session.run(None, f) for f in feeds]
    infer = (time.perf_counter() - t) / len(feeds)
    t = time.perf_counter()
    n_dets = 0
    for (im, _, meta), o in zip(pre, outs, strict=True):
        per = split_outputs({"output0": o[0]}, dec, 1)[0]
        n_dets += len(to_detections(per, meta, im["id"], dec, cats, ev["score_threshold"],
                                    ev["max_detections"]))
    decode = (time.perf_counter() - t) / len(feeds)
    cand = int((np.max(outs[0][0][0, 4:], axis=0) >= dec["nms"]["conf"]).sum())
    print(f"YOLOv8n {size}: inference {1000 * infer:.1f} ms/img, decode+NMS {1000 * decode:.2f} ms/img "
          f"({cand} of {outs[0][0].shape[2]} candidates over conf), ratio {decode / infer:.3f}x "
          f"(target <= 0.1x); {n_dets / len(feeds):.0f} detections/img")
    if size == 320:
        t = time.perf_counter()
        for f in feeds:
            r.session.run(None, f)
        bare = len(feeds) / (time.perf_counter() - t)
        _, stats = evaluate_runner(r, spec, man, ev)
        print(f"YOLOv8n {size}: bare session.run {bare:.1f} img/s, evaluation loop "
              f"{stats['images_per_s']:.1f} img/s, ratio {stats['images_per_s'] / bare:.2f}x "
              f"(target >= 0.9x)")
print(json.dumps({"tmp": str(tmp)}))
