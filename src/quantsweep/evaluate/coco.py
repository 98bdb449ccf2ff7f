"""COCO bbox metrics with pycocotools (the metric of record). Runs in quantsweep's env."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
                "ARs", "ARm", "ARl")
BY_AREA = ("APs", "APm", "APl", "ARs", "ARm", "ARl")


class DetectionsError(ValueError):
    pass


ENGINES = ("pycocotools", "faster-coco-eval")


def _coco(engine: str) -> tuple[Any, Any]:
    """(COCO, COCOeval) of the engine: pycocotools is the metric of record; faster-coco-eval is
    the optional faster path (it must agree to 1e-4: tests/test_coco_engines.py)."""
    if engine == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if engine == "faster-coco-eval":
        try:
            from faster_coco_eval import COCO as FCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError as exc:
            raise DetectionsError(f"evaluate.coco_engine is faster-coco-eval, which is not "
                                  f"installed: {exc}") from None
        return FCOCO, COCOeval_faster
    raise DetectionsError(f"unknown COCO engine {engine!r}; one of {ENGINES}")


def score_detections(detections: str | Path | list[dict[str, Any]], annotations: str | Path,
                     mode: str = "measured", engine: str = "pycocotools",
                     by_area: bool = True) -> dict[str, Any]:
    """AP, AP50, AP75, APs/m/l and AR@1/10/100 plus per-class AP; empty detections -> zeros.
    ``by_area=False`` matches the detections over the whole area range only (a quarter of the
    matching work): APs/m/l and ARs/m/l are then None, the others are the same numbers."""
    COCO, COCOeval = _coco(engine)

    dets = detections
    if not isinstance(dets, list):
        dets = json.loads(Path(dets).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
    img_ids = set(gt.getImgIds())
    bad = [d["image_id"] for d in dets if d["image_id"] not in img_ids]
    if bad:
        raise DetectionsError(f"detections name image ids not in {annotations}: {sorted(set(bad))[:10]}")
    cats = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    unknown = sorted({d["category_id"] for d in dets} - set(cats))
    if unknown:
        raise DetectionsError(f"detections name category ids not in {annotations}: {unknown}")
    unscored = () if by_area else BY_AREA  # None, not a number, when by-size was not matched
    out: dict[str, Any] = {"status": "ok", "mode": mode, "n_images": len(img_ids),
                           "n_detections": len(dets), "coco_engine": engine}
    if not dets:
        out.update({k: None if k in unscored else 0.0 for k in METRIC_NAMES})
        out["per_class_AP"] = {name: 0.0 for name in cats.values()}
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        if not by_area and engine == "pycocotools":  # the first range is "all", the one AP,
            # AP50, AP75 and AR are taken on (faster-coco-eval's summary needs all four ranges)
            ev.params.areaRng, ev.params.areaRngLbl = ev.params.areaRng[:1], ev.params.areaRngLbl[:1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out.update({k: None if k in unscored else round(float(v), 6)
                for k, v in zip(METRIC_NAMES, ev.stats, strict=True)})
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[cats[cid]] = round(float(p.mean()), 6) if p.size else 0.0
    out["per_class_AP"] = per_class
    return out
