"""Decode a model's outputs into COCO detections (original-image pixels, dataset ids)."""

from __future__ import annotations

from typing import Any

import numpy as np

from quantsweep.evaluate.preprocess import Meta


class DecodeError(ValueError):
    pass


def label_to_category(label_map: Any, categories: list[dict[str, Any]]) -> list[int]:
    if label_map == "dataset":
        return sorted(c["id"] for c in categories)
    return list(label_map)


def _to_xyxy(b: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1)
    c, wh = b[:, :2], b[:, 2:4]
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)


def _to_original(b: np.ndarray, coords: str, meta: Meta) -> np.ndarray:
    b = b.astype(np.float64, copy=True)
    if coords == "normalized":
        b[:, [0, 2]] *= meta.orig_w
        b[:, [1, 3]] *= meta.orig_h
    elif coords == "input":
        b[:, [0, 2]] = (b[:, [0, 2]] - meta.pad_x) / meta.scale_x
        b[:, [1, 3]] = (b[:, [1, 3]] - meta.pad_y) / meta.scale_y
    return b


def split_outputs(outputs: dict[str, np.ndarray], dec: dict[str, Any],
                  batch: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes [K,4], scores [K], labels [K]) in the model's own conventions."""
    ordered = list(outputs.values())

    def get(ref: str | int) -> np.ndarray:
        if isinstance(ref, int):
            if ref >= len(ordered):
                raise DecodeError(f"output #{ref} requested; the model has {len(ordered)} outputs")
            return ordered[ref]
        return outputs[ref]

    try:
        if dec["layout"] == "paddle_bbox":
            bbox, num = get(dec["bbox"]), get(dec["bbox_num"]).reshape(-1)
            if bbox.ndim != 2 or bbox.shape[1] != 6:
                raise DecodeError(f"output {dec['bbox']!r}: expected [M,6], got {bbox.shape}")
            out, start = [], 0
            for n in num[:batch]:
                part = bbox[start:start + int(n)]
                start += int(n)
                out.append((part[:, 2:6], part[:, 1], part[:, 0]))
            return out
        boxes, scores, labels = get(dec["boxes"]), get(dec["scores"]), get(dec["labels"])
    except KeyError as exc:
        raise DecodeError(f"the model has no output named {exc.args[0]!r}; outputs: "
                          f"{sorted(outputs)}") from None
    if boxes.ndim == 2:
        boxes, scores, labels = boxes[None], scores[None], labels[None]
    return [(boxes[i], scores[i], labels[i]) for i in range(batch)]


def to_detections(per_image: tuple[np.ndarray, np.ndarray, np.ndarray], meta: Meta,
                  image_id: int, dec: dict[str, Any], cat_ids: list[int],
                  score_threshold: float, max_detections: int) -> list[dict[str, Any]]:
    boxes, scores, labels = per_image
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    xyxy = _to_original(_to_xyxy(boxes, dec["box_format"]), dec["coordinates"], meta)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, meta.orig_w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, meta.orig_h)
    dets = []
    for (x1, y1, x2, y2), s, lab in zip(xyxy, scores, labels, strict=True):
        k = int(round(float(lab)))
        if not 0 <= k < len(cat_ids):
            raise DecodeError(f"label {lab} is outside the label map (0..{len(cat_ids) - 1})")
        dets.append({"image_id": int(image_id), "category_id": int(cat_ids[k]),
                     "bbox": [round(float(x1), 2), round(float(y1), 2),
                              round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                     "score": round(float(s), 5)})
    return dets
