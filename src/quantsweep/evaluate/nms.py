"""Greedy non-maximum suppression in numpy, the semantics of ``torchvision.ops.nms`` /
``batched_nms``: boxes are visited in descending score order, and a box is suppressed when its
IoU with a kept, higher-scoring box of the same class is greater than the threshold. Checked
against torchvision in tests/test_real_detectors.py.

Each step compares the kept box with the live boxes of its own class only (classes never
suppress each other), and the walk stops once ``max_det`` boxes are kept: the first ``max_det``
kept boxes are the same as those of a full NMS truncated to ``max_det``."""

from __future__ import annotations

import numpy as np


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                iou_threshold: float, max_det: int | None = None) -> np.ndarray:
    """Indices of the kept boxes (x1,y1,x2,y2), highest score first; class-aware."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = boxes[order]
    cls = np.asarray(classes).reshape(-1)[order]
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    # ranks of each class, ascending (= by descending score)
    srt = np.argsort(cls, kind="stable")
    uniq, starts = np.unique(cls[srt], return_index=True)
    by_class = dict(zip(uniq.tolist(), np.split(srt, starts[1:]), strict=True))
    cls_list = cls.tolist()
    alive = np.ones(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_det is None else max_det
    k = 0
    while len(keep) < limit:
        rest = alive[k:]
        if not rest.any():
            break
        k += int(np.argmax(rest))  # the next live box in score order
        keep.append(k)
        alive[k] = False
        group = by_class[cls_list[k]]
        cand = group[np.searchsorted(group, k, side="right"):]
        cand = cand[alive[cand]]
        if cand.size:
            bc = b[cand]
            w = np.maximum(np.minimum(b[k, 2], bc[:, 2]) - np.maximum(b[k, 0], bc[:, 0]), 0.0)
            h = np.maximum(np.minimum(b[k, 3], bc[:, 3]) - np.maximum(b[k, 1], bc[:, 1]), 0.0)
            inter = w * h
            union = area[k] + area[cand] - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            alive[cand[iou > iou_threshold]] = False
        k += 1
        if k >= n:
            break
    return order[np.asarray(keep, dtype=np.int64)]

