"""Evaluation loop images/s vs a bare onnxruntime InferenceSession.run loop over the same
preprocessed inputs (target >= 0.9x). Uses the synthetic dataset and a real ONNX model."""
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers_onnx import const_detector  # noqa: E402

from quantsweep.backends.onnxruntime import runner  # noqa: E402
from quantsweep.config import DEFAULT_CATEGORIES  # noqa: E402
from quantsweep.dataset import generate_synthetic  # noqa: E402
from quantsweep.evaluate.loop import evaluate_runner, iter_preprocessed, val_images  # noqa: E402
from quantsweep.evaluate.preprocess import build_feeds  # noqa: E402

with tempfile.TemporaryDirectory() as d:
    syn = {"seed": 0, "train": 0, "calib": 1, "val": 100, "min_size": 320, "max_size": 640,
           "max_objects": 6, "empty_fraction": 0.05, "categories": DEFAULT_CATEGORIES}
    man = generate_synthetic(syn, "b", Path(d) / "ds")
    model = const_detector(Path(d) / "m.onnx", [0.1, 0.1, 0.5, 0.5], 1, size=320)
    spec = {"inputs": [{"name": "x", "role": "image"}],
            "preprocess": {"resize": "stretch", "size": [320, 320], "channel_order": "RGB",
                           "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1], "pad_value": 114},
            "decode": {"layout": "separate", "boxes": "boxes", "scores": "scores", "labels": "labels",
                       "box_format": "xyxy", "coordinates": "normalized", "label_map": "dataset"}}
    ev = {"score_threshold": 0.001, "max_detections": 100, "max_images": None}
    r = runner(model, {"threads": 1})
    feeds = [build_feeds([x], [m], spec["inputs"]) for _, x, m in
             iter_preprocessed(val_images(man, "val", None), spec["preprocess"])]
    t = time.perf_counter()
    for f in feeds:
        r.session.run(None, f)
    bare = len(feeds) / (time.perf_counter() - t)
    _, stats = evaluate_runner(r, spec, man, ev)
    print(f"bare session.run: {bare:.1f} img/s   eval loop (decode+preprocess prefetched): "
          f"{stats['images_per_s']:.1f} img/s   ratio {stats['images_per_s'] / bare:.2f}x (target >= 0.9x)")
