"""Greedy non-maximum suppression in numpy, the semantics of ``torchvision.ops.nms`` /
``batched_nms``: boxes are visited in descending score order, and a box is suppressed when its
IoU with a kept, higher-scoring box of the same class is greater than the threshold. Checked
against torchvision in tests/test_real_detectors.py.

No Python loop per box: the boxes are taken in score order in blocks. A block's boxes are first
checked against every box kept before it (one IoU matrix), then among themselves: with ``S`` the
block's "i suppresses j" matrix (i before j, same class, IoU over the threshold), the greedy
result is the one ``keep`` with ``keep[j] = alive[j] and not any(keep[i] and S[i, j])``; it is
found by applying that rule to the whole block until nothing changes (each pass settles at
least the next box in order: a few passes for scattered boxes, about 20 per block for the
piled-up candidates of a YOLOv8n at random init). The walk stops once
``max_det`` boxes are kept: the first ``max_det`` kept boxes are the same as those of a full
NMS truncated to ``max_det``."""

from __future__ import annotations

import numpy as np

BLOCK = 128  # boxes per block: the block's IoU matrix is BLOCK x BLOCK


def _iou(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1,y1,x2,y2 boxes (0 where the union is empty)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                iou_threshold: float, max_det: int | None = None) -> np.ndarray:
    """Indices of the kept boxes (x1,y1,x2,y2), highest score first; class-aware. The IoU is
    computed in float32, as torchvision computes it for float32 boxes (a block's IoU matrix in
    float64 cost about 4x as much here)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = boxes[order]
    cls = np.asarray(classes).reshape(-1)[order]  # compared for equality only
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    limit = n if max_det is None else max_det
    kept = np.zeros(0, dtype=np.int64)  # positions in score order
    for start in range(0, n, BLOCK):
        if len(kept) >= limit:
            break
        idx = np.arange(start, min(start + BLOCK, n))
        alive = np.ones(len(idx), dtype=bool)
        if len(kept):  # suppressed by a box kept in an earlier block
            over = _iou(b[kept], b[idx], area[kept], area[idx]) > iou_threshold
            alive &= ~(over & (cls[kept][:, None] == cls[idx][None, :])).any(axis=0)
        live = idx[alive]
        if live.size == 0:
            continue
        s = _iou(b[live], b[live], area[live], area[live]) > iou_threshold
        s &= cls[live][:, None] == cls[live][None, :]
        # only a higher-scoring box suppresses; as 0/1 floats, a pass is one vector-matrix product
        sf = np.triu(s, k=1).astype(np.float32)
        keep = np.ones(live.size, dtype=np.float32)
        while True:
            new = (keep @ sf == 0).astype(np.float32)
            if not (new != keep).any():
                break
            keep = new
        kept = np.concatenate([kept, live[keep > 0]])
    return order[kept[:limit]]
