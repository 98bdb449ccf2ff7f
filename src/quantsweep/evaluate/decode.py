"""Decode a model's outputs into COCO detections (original-image pixels, dataset ids).

A layout is one function in :data:`LAYOUTS`: ``(outputs, decode, batch) -> [Decoded per image]``
in the model's own box format and coordinates; :func:`to_detections` then maps coordinates and
class indices. Presets (``presets.py``) are data that fill a decode block. Everything here is
vectorized numpy on the outputs the graph already produced; nothing re-runs the model.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantsweep.evaluate.nms import batched_nms
from quantsweep.evaluate.preprocess import Meta
from quantsweep.evaluate.presets import COCO80_IDS

FOREIGN = -1  # a class index whose category the dataset does not have (dropped and counted)


class DecodeError(ValueError):
    """The outputs do not fit the decode block: a ``decode_error`` row."""

    reason_class = "decode_error"


class LabelMapError(DecodeError):
    """Class indices and the label map disagree: a ``label_map_mismatch`` row."""

    reason_class = "label_map_mismatch"


@dataclass
class Decoded:
    boxes: np.ndarray  # [K, 4] in ``box_format``, the model's coordinates
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] class indices
    box_format: str
    num_classes: int | None = None  # when the layout knows it (yolo)


# ---- label maps ------------------------------------------------------------------------------

def _norm_name(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def parse_names(raw: Any) -> list[str]:
    """Class names as Ultralytics writes them into ONNX metadata (``"{0: 'person', ...}"``), a
    dict {index: name}, or a list."""
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise LabelMapError(f"class names {raw[:80]!r} are not a dict or list literal") from None
    if isinstance(raw, dict):
        try:
            return [str(raw[k]) for k in sorted(raw, key=int)]
        except (TypeError, ValueError):
            raise LabelMapError("class names: a dict whose keys are not class indices") from None
    if isinstance(raw, list | tuple):
        return [str(n) for n in raw]
    raise LabelMapError(f"class names of type {type(raw).__name__}: expected a dict or a list")


def label_to_category(label_map: Any, categories: list[dict[str, Any]],
                      model_names: list[str] | None = None) -> list[int]:
    """Class index -> category id. ``FOREIGN`` marks an index the dataset has no category for."""
    if isinstance(label_map, list):
        return [int(x) for x in label_map]
    if label_map == "dataset":
        return sorted(c["id"] for c in categories)
    if label_map == "coco80":
        return list(COCO80_IDS)
    if label_map == "coco91":
        return list(range(91))  # index = category id (0 is torchvision's background)
    if label_map == "names":
        if not model_names:
            raise LabelMapError("label_map 'names' needs the model's class names (decode.names, or "
                                "ONNX metadata 'names' as Ultralytics writes it); the model has none")
        by_name = {_norm_name(c["name"]): c["id"] for c in categories}
        ids = [by_name.get(_norm_name(n), FOREIGN) for n in model_names]
        if all(i == FOREIGN for i in ids):
            raise LabelMapError(
                f"label_map 'names': none of the model's {len(model_names)} class names is a "
                f"dataset category; model: {model_names[:8]}{' ...' if len(model_names) > 8 else ''}"
                f"; dataset: {sorted(by_name)[:8]}")
        return ids
    raise LabelMapError(f"unknown label_map {label_map!r}")


def unmatched_names(label_map: Any, model_names: list[str] | None,
                    categories: list[dict[str, Any]]) -> list[str]:
    """The model's class names that match no dataset category (label_map 'names')."""
    if label_map != "names" or not model_names:
        return []
    have = {_norm_name(c["name"]) for c in categories}
    return [n for n in model_names if _norm_name(n) not in have]


# ---- output lookup and shapes ----------------------------------------------------------------

def _shapes(outputs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {list(np.shape(v))}" for k, v in outputs.items())


def _get(outputs: dict[str, np.ndarray], ref: str | int, role: str) -> np.ndarray:
    if isinstance(ref, int):
        ordered = list(outputs.values())
        if ref >= len(ordered):
            raise DecodeError(f"decode.{role}: output #{ref} requested; the model has "
                              f"{len(ordered)} outputs ({_shapes(outputs)})")
        return np.asarray(ordered[ref])
    if ref not in outputs:
        raise DecodeError(f"decode.{role}: the model has no output named {ref!r}; outputs: "
                          f"{_shapes(outputs)}")
    return np.asarray(outputs[ref])


def _batch_first(t: np.ndarray, ndim: int, role: str, expected: str, batch: int) -> np.ndarray:
    """``t`` with a leading batch axis (added when the output has none)."""
    if t.ndim == ndim - 1:
        t = t[None]
    if t.ndim != ndim or t.shape[0] < batch:
        raise DecodeError(f"decode.{role}: expected {expected}, got shape {list(t.shape)}")
    return t


def _counts(outputs: dict[str, np.ndarray], dec: dict[str, Any], batch: int, k: int) -> list[int]:
    if dec.get("count") is None:
        return [k] * batch
    c = _get(outputs, dec["count"], "count").reshape(-1)
    if c.size < batch:
        raise DecodeError(f"decode.count: expected [B] or [B,1] with B={batch}, got shape "
                          f"{list(np.shape(outputs.get(dec['count'], c)))}")
    return [int(min(max(int(n), 0), k)) for n in c[:batch]]


# ---- layouts ---------------------------------------------------------------------------------

def decode_separate(outputs: dict[str, np.ndarray], dec: dict[str, Any], batch: int) -> list[Decoded]:
    """boxes [B,K,4] (or [K,4]), scores [B,K], labels [B,K]; optional count [B,1]: slots past
    it are ignored (EfficientNMS/BatchedNMS)."""
    boxes = _batch_first(_get(outputs, dec["boxes"], "boxes"), 3, "boxes", "[B,K,4] or [K,4]", batch)
    scores = _get(outputs, dec["scores"], "scores")
    labels = _get(outputs, dec["labels"], "labels")
    if scores.ndim == boxes.ndim and scores.shape[-1] == 1:  # [B,K,1]
        scores = scores[..., 0]
    scores = _batch_first(scores, 2, "scores", "[B,K] or [K]", batch)
    labels = _batch_first(labels.reshape(labels.shape[:-1]) if labels.ndim == 3 and labels.shape[-1] == 1
                          else labels, 2, "labels", "[B,K] or [K]", batch)
    if boxes.shape[-1] != 4 or scores.shape[:2] != boxes.shape[:2] or labels.shape[:2] != boxes.shape[:2]:
        raise DecodeError(f"decode: boxes {list(boxes.shape)}, scores {list(scores.shape)}, labels "
                          f"{list(labels.shape)} do not fit boxes [B,K,4], scores [B,K], labels [B,K]")
    counts = _counts(outputs, dec, batch, boxes.shape[1])
    return [Decoded(boxes[i, :n], scores[i, :n], labels[i, :n], dec["box_format"])
            for i, n in enumerate(counts)]


def decode_paddle_bbox(outputs: dict[str, np.ndarray], dec: dict[str, Any], batch: int) -> list[Decoded]:
    """PaddleDetection: bbox [M,6] (class, score, x1, y1, x2, y2) + bbox_num [B]."""
    bbox = _get(outputs, dec["bbox"], "bbox")
    num = _get(outputs, dec["bbox_num"], "bbox_num").reshape(-1)
    if bbox.ndim != 2 or bbox.shape[1] != 6:
        raise DecodeError(f"decode.bbox: output {dec['bbox']!r}: expected [M,6], got {list(bbox.shape)}")
    if num.size < batch or int(num[:batch].sum()) > bbox.shape[0]:
        raise DecodeError(f"decode.bbox_num: {num[:batch].tolist()} boxes for {bbox.shape[0]} rows")
    out, start = [], 0
    for n in num[:batch]:
        part = bbox[start:start + int(n)]
        start += int(n)
        out.append(Decoded(part[:, 2:6], part[:, 1], part[:, 0], "xyxy"))
    return out


ROW_BOX_COLUMNS = {"xyxy": ("x1", "y1", "x2", "y2"), "cxcywh": ("cx", "cy", "w", "h"),
                   "xywh": ("x", "y", "w", "h")}
ROW_COLUMNS = {"x1", "y1", "x2", "y2", "cx", "cy", "x", "y", "w", "h", "score", "class", "skip"}


def row_box_format(columns: list[str]) -> str | None:
    for fmt, names in ROW_BOX_COLUMNS.items():
        if all(n in columns for n in names):
            return fmt
    return None


def decode_rows(outputs: dict[str, np.ndarray], dec: dict[str, Any], batch: int) -> list[Decoded]:
    """One tensor [B,N,K] (or [N,K]) whose K columns are named by ``columns``; the box format
    follows from the column names; optional count [B,1]."""
    cols = list(dec["columns"])
    t = _batch_first(_get(outputs, dec["output"], "output"), 3, "output", "[B,N,K] or [N,K]", batch)
    if t.shape[-1] != len(cols):
        raise DecodeError(f"decode.columns names {len(cols)} columns {cols}; output "
                          f"{dec['output']!r} has {t.shape[-1]} (shape {list(t.shape)})")
    fmt = row_box_format(cols)
    if fmt is None:
        boxes_known = " / ".join(",".join(v) for v in ROW_BOX_COLUMNS.values())
        raise DecodeError(f"decode.columns {cols}: no complete box ({boxes_known})")
    at = {c: i for i, c in enumerate(cols)}
    boxes = t[..., [at[c] for c in ROW_BOX_COLUMNS[fmt]]]
    counts = _counts(outputs, dec, batch, t.shape[1])
    return [Decoded(boxes[i, :n], t[i, :n, at["score"]], t[i, :n, at["class"]], fmt)
            for i, n in enumerate(counts)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def yolo_channels(shape: tuple[int, ...], dec: dict[str, Any]) -> tuple[bool, int]:
    """(channels last?, number of classes) of a yolo tensor [B,C,N] or [B,N,C]."""
    fixed = 4 + int(bool(dec.get("objectness"))) + int(dec.get("extra", 0))
    nc = dec.get("num_classes")
    transposed = dec.get("transposed")
    _, d1, d2 = shape
    if transposed is None:
        if nc is not None:
            want = fixed + int(nc)
            if d1 == want and d2 != want:
                transposed = False
            elif d2 == want:
                transposed = True
            else:
                raise DecodeError(f"decode: a yolo tensor of shape {list(shape)}: neither dim 1 nor "
                                  f"dim 2 is 4+nc{'+1' if dec.get('objectness') else ''}"
                                  f"{'+extra' if dec.get('extra') else ''} = {want} (num_classes {nc})")
        else:
            transposed = d1 > d2  # N candidates outnumber the channels
    c = d2 if transposed else d1
    n_classes = c - fixed if nc is None else int(nc)
    if n_classes < 1 or c != fixed + n_classes:
        raise DecodeError(f"decode: a yolo tensor of shape {list(shape)} read as "
                          f"{'[B,N,C]' if transposed else '[B,C,N]'} has C={c} channels; expected "
                          f"4 box{' + 1 objectness' if dec.get('objectness') else ''} + "
                          f"{'num_classes' if nc is None else nc} classes"
                          f"{' + ' + str(dec['extra']) + ' extra' if dec.get('extra') else ''}")
    return bool(transposed), n_classes


def decode_yolo(outputs: dict[str, np.ndarray], dec: dict[str, Any], batch: int) -> list[Decoded]:
    """One tensor [B, 4+nc(+extra), N] or [B, N, 4+nc(+extra)]: boxes, optional objectness
    (score = obj x cls), class scores; best class per candidate, confidence threshold, then
    class-aware NMS (``nms.enabled`` false for end-to-end heads such as RT-DETR)."""
    t = _batch_first(_get(outputs, dec["output"], "output"), 3, "output",
                     "[B,4+nc,N] or [B,N,4+nc]", batch)
    transposed, nc = yolo_channels(t.shape, dec)
    if transposed:  # read channels first, as most exporters write them: [C, N] rows are contiguous
        t = t.transpose(0, 2, 1)
    nms = _nms_settings(dec)
    obj = 1 if dec.get("objectness") else 0
    out = []
    for i in range(batch):
        cand = t[i]  # [C, N]
        cls = cand[4 + obj:4 + obj + nc].astype(np.float32, copy=False)
        if dec.get("activation") == "sigmoid":
            cls = _sigmoid(cls)
        labels = cls.argmax(axis=0)
        scores = cls[labels, np.arange(cls.shape[1])]
        if obj:
            o = cand[4]
            scores = scores * (_sigmoid(o) if dec.get("activation") == "sigmoid" else o)
        keep = _select(cand[:4].T, scores, labels, dec["box_format"], nms)
        out.append(Decoded(cand[:4, keep].T, scores[keep], labels[keep], dec["box_format"], nc))
    return out


def _nms_settings(dec: dict[str, Any]) -> dict[str, Any]:
    return {"enabled": True, "iou": 0.7, "conf": 0.001, "pre_top_k": 30000, "max_det": 300,
            **(dec.get("nms") or {})}


def _select(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, box_format: str,
            nms: dict[str, Any]) -> np.ndarray:
    """Indices of the candidates kept: score >= conf, the best ``pre_top_k``, class-aware NMS,
    at most ``max_det``; highest score first."""
    keep = np.nonzero(scores >= nms["conf"])[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")[:nms["pre_top_k"]]]
    if nms["enabled"] and keep.size:
        keep = keep[batched_nms(to_xyxy(boxes[keep], box_format), scores[keep], labels[keep],
                                nms["iou"], nms["max_det"])]
    return keep[:nms["max_det"]]


def decode_boxes_scores(outputs: dict[str, np.ndarray], dec: dict[str, Any],
                        batch: int) -> list[Decoded]:
    """Candidates before NMS as two outputs: boxes [B,N,4] and per-class scores [B,C,N] (or
    [B,N,C]: ``transposed``, else detected from N). Every (candidate, class) pair over
    ``nms.conf`` is a detection, then class-aware NMS: the semantics of PaddleDetection's
    MultiClassNMS, for heads exported without it (``exclude_nms``)."""
    boxes = _batch_first(_get(outputs, dec["boxes"], "boxes"), 3, "boxes", "[B,N,4]", batch)
    scores = _batch_first(_get(outputs, dec["scores"], "scores"), 3, "scores",
                          "[B,C,N] or [B,N,C]", batch)
    n = boxes.shape[1]
    transposed = dec.get("transposed")
    if transposed is None:
        transposed = scores.shape[1] == n and scores.shape[2] != n
    if transposed:
        scores = scores.transpose(0, 2, 1)
    if boxes.shape[2] != 4 or scores.shape[2] != n:
        raise DecodeError(f"decode: boxes {list(boxes.shape)} and scores {list(scores.shape)} do "
                          f"not fit boxes [B,N,4] and scores [B,C,N] (or [B,N,C])")
    nc = scores.shape[1]
    if dec.get("num_classes") is not None and int(dec["num_classes"]) != nc:
        raise DecodeError(f"decode.num_classes: {dec['num_classes']}, but the scores have {nc} "
                          f"classes (shape {list(scores.shape)})")
    nms = _nms_settings(dec)
    out = []
    for i in range(batch):
        s = scores[i].astype(np.float32, copy=False)
        if dec.get("activation") == "sigmoid":
            s = _sigmoid(s)
        flat = s.reshape(-1)  # class-major: pair k is class k // n, candidate k % n
        pairs = np.nonzero(flat >= nms["conf"])[0]
        pair_boxes = boxes[i][pairs % n]
        keep = _select(pair_boxes, flat[pairs], pairs // n, dec["box_format"], nms)
        out.append(Decoded(pair_boxes[keep], flat[pairs[keep]], pairs[keep] // n,
                           dec["box_format"], nc))
    return out


Layout = Callable[[dict[str, np.ndarray], dict[str, Any], int], list[Decoded]]
LAYOUTS: dict[str, Layout] = {"separate": decode_separate, "paddle_bbox": decode_paddle_bbox,
                              "rows": decode_rows, "yolo": decode_yolo,
                              "boxes_scores": decode_boxes_scores}
# the decode keys that name outputs, per layout (required, optional)
OUTPUT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "separate": (("boxes", "scores", "labels"), ("count",)),
    "paddle_bbox": (("bbox", "bbox_num"), ()),
    "rows": (("output",), ("count",)),
    "yolo": (("output",), ()),
    "boxes_scores": (("boxes", "scores"), ()),
}


def split_outputs(outputs: dict[str, np.ndarray], dec: dict[str, Any], batch: int) -> list[Decoded]:
    """Per image: the decoded boxes, scores and labels in the model's own conventions. Any
    failure is a :class:`DecodeError` naming the outputs seen."""
    try:
        return LAYOUTS[dec["layout"]](outputs, dec, batch)
    except DecodeError as exc:
        if "outputs:" in str(exc) or "outputs " in str(exc):
            raise
        raise type(exc)(f"{exc}; outputs: {_shapes(outputs)}") from None
    except (ValueError, IndexError, TypeError, KeyError) as exc:
        raise DecodeError(f"decode layout {dec['layout']!r} failed on outputs {_shapes(outputs)}: "
                          f"{type(exc).__name__}: {exc}") from None


# ---- coordinates and records -----------------------------------------------------------------

def to_xyxy(b: np.ndarray, fmt: str) -> np.ndarray:
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
    elif coords in ("input", "normalized_input"):
        if coords == "normalized_input":
            b[:, [0, 2]] *= meta.in_w
            b[:, [1, 3]] *= meta.in_h
        b[:, [0, 2]] = (b[:, [0, 2]] - meta.pad_x) / meta.scale_x
        b[:, [1, 3]] = (b[:, [1, 3]] - meta.pad_y) / meta.scale_y
    return b


def to_detections(per_image: Decoded, meta: Meta, image_id: int, dec: dict[str, Any],
                  cat_ids: list[int], score_threshold: float,
                  max_detections: int) -> list[dict[str, Any]]:
    """COCO records; a class index mapped to ``FOREIGN`` gets category id -1 (the caller drops
    and counts those)."""
    d = per_image
    if d.num_classes is not None and d.num_classes > len(cat_ids):
        raise LabelMapError(f"the model has {d.num_classes} classes; the label map has "
                            f"{len(cat_ids)} entries")
    boxes = np.asarray(d.boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(d.scores, np.float64).reshape(-1)
    labels = np.asarray(d.labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise DecodeError(f"{len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    boxes, scores = boxes[order], scores[order]
    idx = np.rint(labels[order].astype(np.float64)).astype(np.int64)
    bad = (idx < 0) | (idx >= len(cat_ids))
    if bad.any():
        raise LabelMapError(f"class index {int(idx[bad][0])} is outside the label map of "
                            f"{len(cat_ids)} entries (0..{len(cat_ids) - 1})")
    cats = np.asarray(cat_ids, np.int64)[idx]
    xyxy = _to_original(to_xyxy(boxes, d.box_format), dec["coordinates"], meta)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, meta.orig_w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, meta.orig_h)
    xywh = np.round(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1), 2)
    scores = np.round(scores, 5)
    return [{"image_id": int(image_id), "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
            for b, s, c in zip(xywh, scores, cats, strict=True)]
