"""Decode cost of the yolo layout: decoding + class-aware NMS per image vs ONNX Runtime inference
per image, for an Ultralytics YOLOv8n graph at 320 (and 640 without --quick): target <= 0.1x;
and the evaluation loop on the YOLOv8n graph vs a bare InferenceSession.run loop over the same
preprocessed inputs (target >= 0.95x). The graphs are exported here at random init by
Ultralytics in the toolset of tests/test_real_detectors.py, with the class biases zeroed so that
every one of the N candidates passes the 0.001 confidence threshold and goes to NMS: the
decoder's worst case.

    python benchmarks/decode_cost.py [--images 40] [--quick] [--no-create-env]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import emit, figure, unmeasured  # noqa: E402

GOAL, LOOP_GOAL = "<= 0.1", ">= 0.95"
# the class-score biases zeroed: at random init Ultralytics' bias prior keeps every score below
# the 0.001 threshold (nothing to decode); with them at 0 every candidate goes to NMS
EXPORT = ("import shutil, sys, torch\nfrom ultralytics import YOLO\n"
          "m = YOLO('yolov8n.yaml')\n"
          "for seq in m.model.model[-1].cv3: torch.nn.init.zeros_(seq[-1].bias)\n"
          "f = m.export(format='onnx', opset=17, imgsz=int(sys.argv[1]))\n"
          "shutil.move(f, sys.argv[2])\n")


def _env(create: bool) -> tuple[Any, str]:
    """The Ultralytics toolset env (None and why when it is not there and may not be made)."""
    from test_real_detectors import ULTRA_TOOLSET

    from quantsweep.toolsets import ensure_env, env_hash, python_version, read_pip_settings

    envs = Path(os.environ.get("QUANTSWEEP_TEST_ENVS", REPO / ".envs"))
    if not create:
        h = env_hash(ULTRA_TOOLSET, read_pip_settings(), python_version(os.path.realpath(sys.executable)))
        if not (envs / f"ultra8.4-{h}").is_dir():
            return None, (f"the ultra8.4 toolset env is not built under {envs} (6 GB; the test suite "
                          "or `python benchmarks/decode_cost.py` builds it)")
    env = ensure_env("ultra8.4", ULTRA_TOOLSET, envs)
    return (env, "") if env.status == "ok" else (None, f"toolset ultra8.4: {env.message[-300:]}")


def measure(images: int = 40, sizes: tuple[int, ...] = (320, 640), create_env: bool = True,
            reps: int = 3) -> list[dict[str, Any]]:
    import numpy as np

    from quantsweep.backends.onnxruntime import runner
    from quantsweep.config import DEFAULT_CATEGORIES, validate_config
    from quantsweep.dataset import generate_synthetic
    from quantsweep.evaluate.decode import label_to_category, split_outputs, to_detections
    from quantsweep.evaluate.loop import evaluate_runner
    from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images
    from quantsweep.interpreter import interpreter_env

    env, why = _env(create_env)
    if env is None:
        return [unmeasured("decode_cost", "ratio", GOAL, why),
                unmeasured("decode_cost", "yolo_eval_loop_ratio", LOOP_GOAL, why)]
    tmp = Path(tempfile.mkdtemp(prefix="decode-cost-"))
    syn = {"seed": 0, "train": 0, "calib": 1, "val": images, "min_size": 320, "max_size": 640,
           "max_objects": 6, "empty_fraction": 0.05, "categories": DEFAULT_CATEGORIES}
    man = generate_synthetic(syn, "bench", tmp / "data")
    ims = val_images(man, "val", None)
    figs = []
    for size in sizes:
        onnx_path = tmp / f"yolov8n_{size}.onnx"
        subprocess.run([env.python, "-c", EXPORT, str(size), str(onnx_path)], check=True, cwd=tmp,
                       capture_output=True, env=interpreter_env(env.env_dir, {
                           **os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp / "ucfg")}))
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
        pre = list(iter_preprocessed(ims, spec["preprocess"]))
        feeds = [r.adapt(build_feeds([x], [m], spec["inputs"])) for _, x, m in pre]
        cats = label_to_category(dec["label_map"], man["categories"])
        infer, decode = [], []
        for _ in range(reps):  # interleaved repetitions, the median of each
            t = time.perf_counter()
            outs = [r.session.run(None, f) for f in feeds]
            infer.append((time.perf_counter() - t) / len(feeds))
            t = time.perf_counter()
            for (im, _, meta), o in zip(pre, outs, strict=True):
                per = split_outputs({"output0": o[0]}, dec, 1)[0]
                to_detections(per, meta, im["id"], dec, cats, ev["score_threshold"], ev["max_detections"])
            decode.append((time.perf_counter() - t) / len(feeds))
        inf, de = statistics.median(infer), statistics.median(decode)
        cand = int((np.max(outs[0][0][0, 4:], axis=0) >= dec["nms"]["conf"]).sum())
        name = "ratio" if size == 320 else f"ratio_{size}"
        figs.append(figure("decode_cost", name, de / inf, GOAL, size=size, infer_ms=round(1000 * inf, 2),
                           decode_ms=round(1000 * de, 3), candidates_over_conf=cand,
                           candidates=int(outs[0][0].shape[2]), images=len(feeds)))
        if size == 320:
            bare, loop = [], []
            for _ in range(reps):
                t = time.perf_counter()
                for f in feeds:
                    r.session.run(None, f)
                bare.append(len(feeds) / (time.perf_counter() - t))
                loop.append(evaluate_runner(r, spec, man, ev)[1]["images_per_s"])
            b, lp = statistics.median(bare), statistics.median(loop)
            figs.append(figure("decode_cost", "yolo_eval_loop_ratio", lp / b, LOOP_GOAL,
                               bare_images_per_s=round(b, 1), loop_images_per_s=round(lp, 1)))
    return figs


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="320 only")
    ap.add_argument("--no-create-env", action="store_true")
    a = ap.parse_args()
    emit(measure(a.images, (320,) if a.quick else (320, 640), not a.no_create_env))
