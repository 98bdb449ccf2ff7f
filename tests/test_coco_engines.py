"""faster-coco-eval agrees with pycocotools (the metric of record) to 1e-4 on every metric and on
per-class AP, on a synthetic COCO split with noisy, confused and spurious detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from quantsweep.config import validate_config
from quantsweep.dataset import generate_synthetic
from quantsweep.evaluate.coco import METRIC_NAMES, DetectionsError, score_detections


@pytest.fixture(scope="module")
def val_annotations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco")
    syn = validate_config(tiny_config())["dataset"]["synthetic"]
    m = generate_synthetic({**syn, "seed": 3, "train": 0, "calib": 1, "val": 40}, "t", out)
    return Path(m["splits"]["val"]["annotations"])


def noisy_detections(ann: Path, seed: int) -> list[dict]:
    gt = json.loads(ann.read_text())
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.08, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.random()),
                     "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]})
    for img in gt["images"]:  # spurious boxes
        for _ in range(int(rng.integers(0, 3))):
            w, h = rng.uniform(5, 80, 2)
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cats)),
                         "score": float(rng.random() * 0.5),
                         "bbox": [float(rng.uniform(0, img["width"] - w)),
                                  float(rng.uniform(0, img["height"] - h)), float(w), float(h)]})
    return dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_agrees_with_pycocotools(val_annotations: Path, seed: int) -> None:
    dets = noisy_detections(val_annotations, seed)
    ref = score_detections(dets, val_annotations)
    fast = score_detections(dets, val_annotations, engine="faster-coco-eval")
    assert 0.05 < ref["AP"] < 0.95  # a non-trivial case
    for k in METRIC_NAMES:
        assert fast[k] == pytest.approx(ref[k], abs=1e-4), k
    assert fast["per_class_AP"].keys() == ref["per_class_AP"].keys()
    for c, ap in ref["per_class_AP"].items():
        assert fast["per_class_AP"][c] == pytest.approx(ap, abs=1e-4), c
    assert (ref["coco_engine"], fast["coco_engine"]) == ("pycocotools", "faster-coco-eval")


def test_both_engines_refuse_the_same_bad_input(val_annotations: Path) -> None:
    bad = [{"image_id": 10**6, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}]
    for engine in ("pycocotools", "faster-coco-eval"):
        with pytest.raises(DetectionsError, match="image ids not in"):
            score_detections(bad, val_annotations, engine=engine)
        empty = score_detections([], val_annotations, engine=engine)
        assert empty["AP"] == 0.0


@pytest.mark.parametrize("engine", ["pycocotools", "faster-coco-eval"])
def test_whole_range_only_scores_the_same_ap(val_annotations: Path, engine: str) -> None:
    """``by_area=False`` (the analysis' AP pass) gives the same AP, AP50, AP75 and AR as the full
    evaluation, and no by-size numbers rather than wrong ones."""
    dets = noisy_detections(val_annotations, 4)
    full = score_detections(dets, val_annotations, engine=engine)
    whole = score_detections(dets, val_annotations, engine=engine, by_area=False)
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert whole[k] == pytest.approx(full[k], abs=1e-9), k
    assert 0.05 < full["APs"] < 0.95 and whole["APs"] is None and whole["ARl"] is None
    assert whole["per_class_AP"] == full["per_class_AP"]
    assert score_detections([], val_annotations, engine=engine, by_area=False)["APm"] is None
