"""The images of a split and their preprocessing from a model's contract; shared by evaluation,
parity, calibration and the analysis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Meta:
    orig_h: int
    orig_w: int
    scale_y: float  # resized = original * scale
    scale_x: float
    pad_y: float = 0.0
    pad_x: float = 0.0
    in_h: int = 0
    in_w: int = 0


def load_image(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def preprocess(img: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, Meta]:
    """HWC uint8 RGB -> CHW float32 per ``spec`` (resize, channel order, scale, mean/std)."""
    from PIL import Image

    return _preprocess_pil(Image.fromarray(img), spec)


def preprocess_file(path: str | Path, spec: dict[str, Any]) -> tuple[np.ndarray, Meta]:
    """``preprocess(load_image(path), spec)``, the same values bit for bit, without the decoded
    image's round trip through numpy (about a fifth of the per-image cost on the demo's JPEGs)."""
    from PIL import Image

    with Image.open(path) as im:
        return _preprocess_pil(im if im.mode == "RGB" else im.convert("RGB"), spec)


def _preprocess_pil(im: Any, spec: dict[str, Any]) -> tuple[np.ndarray, Meta]:
    from PIL import Image

    ow, oh = im.size
    th, tw = spec["size"]
    if spec["resize"] == "stretch":
        arr = np.asarray(im.resize((tw, th), Image.Resampling.BILINEAR))
        meta = Meta(oh, ow, th / oh, tw / ow, in_h=th, in_w=tw)
    else:  # letterbox: keep aspect ratio, pad to size
        s = min(th / oh, tw / ow)
        nh, nw = max(1, round(oh * s)), max(1, round(ow * s))
        resized = np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR))
        arr = np.full((th, tw, 3), spec["pad_value"], dtype=np.uint8)
        py, px = (th - nh) // 2, (tw - nw) // 2
        arr[py:py + nh, px:px + nw] = resized
        meta = Meta(oh, ow, s, s, float(py), float(px), th, tw)
    return normalize(arr, spec), meta


def _lut(spec: dict[str, Any]) -> np.ndarray:
    """(3, 256) float32: each output channel's value of every uint8 level, computed with the
    same float32 operations, in the same order, as on a whole image: ``(v * scale - mean) / std``."""
    v = np.arange(256, dtype=np.uint8)[:, None].astype(np.float32) * np.float32(spec["scale"])
    lut = (v - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(lut.astype(np.float32, copy=False).T)


def normalize(arr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32, channel order, scale, mean and std applied. A uint8 image
    has 256 levels per channel: a table lookup per channel gives the values the float
    arithmetic gives, bit for bit, at a quarter of its cost (tests/test_eval_loop.py)."""
    lut = _lut(spec)
    src = arr.transpose(2, 0, 1)
    if spec["channel_order"] == "BGR":
        src = src[::-1]
    out = np.empty(src.shape, np.float32)
    for k in range(3):
        np.take(lut[k], np.ascontiguousarray(src[k]), out=out[k])
    return out


def role_value(role: str, meta: Meta) -> np.ndarray:
    """The value quantsweep feeds to a non-image input, in its natural dtype (float32 shapes
    and factors, int64 pixel sizes as a framework would create them); the runner casts each
    to the dtype its binding reports."""
    if role == "im_shape":
        return np.array([meta.in_h, meta.in_w], np.float32)
    if role == "scale_factor":
        return np.array([meta.scale_y, meta.scale_x], np.float32)
    if role == "orig_size_wh":
        return np.array([meta.orig_w, meta.orig_h], np.int64)
    if role == "orig_size_hw":
        return np.array([meta.orig_h, meta.orig_w], np.int64)
    raise ValueError(f"unknown input role {role!r}")


def build_feeds(images: list[np.ndarray], metas: list[Meta],
                inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Model inputs for a batch, keyed by input name, in natural dtypes; the runner casts
    each to the dtype its binding reports."""
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        role = spec.get("role", "image")
        if role == "image":
            feeds[spec["name"]] = np.stack(images).astype(np.float32, copy=False)
        else:
            feeds[spec["name"]] = np.stack([role_value(role, m) for m in metas])
    return feeds


def example_feeds(spec: dict[str, Any], orig_hw: tuple[int, int] = (480, 640)) -> dict[str, np.ndarray]:
    """One input of a model's contract (a grey image of ``orig_hw`` through its preprocessing),
    each in the dtype the contract declares: what an exporter traces the model with."""
    x, meta = preprocess(np.full((*orig_hw, 3), 114, np.uint8), spec["preprocess"])
    feeds = build_feeds([x], [meta], spec["inputs"])
    for t in spec["inputs"]:
        if t.get("dtype"):
            feeds[t["name"]] = feeds[t["name"]].astype(t["dtype"])
    return feeds


def val_images(manifest: dict[str, Any], split: str, limit: int | None) -> list[dict[str, Any]]:
    ann = json.loads(Path(manifest["splits"][split]["annotations"]).read_text())
    root = Path(manifest["splits"][split]["images"])
    images = sorted(ann["images"], key=lambda im: im["id"])[:limit]
    return [{**im, "path": str(root / im["file_name"])} for im in images]


def _prefetched(items: list[Any], work: Callable[[Any], Any], prefetch: int) -> Iterator[Any]:
    """``work(item)`` for each item, in order, computed ahead in a worker thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(work, it) for it in items[:prefetch]]
        nxt = prefetch
        while pending:
            fut = pending.pop(0)
            if nxt < len(items):
                pending.append(pool.submit(work, items[nxt]))
                nxt += 1
            yield fut.result()


def iter_preprocessed(images: list[dict[str, Any]], pre: dict[str, Any],
                      prefetch: int = 4) -> Iterator[tuple[dict[str, Any], np.ndarray, Meta]]:
    """Yield (image record, CHW array, meta); decoding runs ahead in a worker thread."""

    def work(im: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, Meta]:
        x, meta = preprocess_file(im["path"], pre)
        return im, x, meta

    return _prefetched(images, work, prefetch)


def iter_feeds(images: list[dict[str, Any]], pre: dict[str, Any], inputs: list[dict[str, Any]],
               prefetch: int = 4) -> Iterator[tuple[dict[str, Any], Meta, dict[str, np.ndarray]]]:
    """Yield (image record, meta, the model's feeds for that one image), made ahead in a worker
    thread (image decoding, preprocessing and the batch-of-one feeds)."""

    def work(im: dict[str, Any]) -> tuple[dict[str, Any], Meta, dict[str, np.ndarray]]:
        x, meta = preprocess_file(im["path"], pre)
        return im, meta, build_feeds([x], [meta], inputs)

    return _prefetched(images, work, prefetch)
