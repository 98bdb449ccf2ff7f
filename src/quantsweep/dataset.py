"""Datasets: the deterministic synthetic demo set, and validation of a user's COCO files.

A dataset ends as ``manifest.json``: categories and, per split (train, calib, val), the
annotation file and the image folder. Every stage reads the manifest, never the config.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantsweep.status import write_bytes_atomic, write_json_atomic

SPLITS = ("train", "calib", "val")


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and the entry."""


# ---------------------------------------------------------------------------------------------
# validation of COCO-format annotation files


def validate_coco(ann_path: str | Path, image_dir: str | Path, tol: float = 1.0) -> dict[str, Any]:
    """Load and check a COCO detection annotation file; return it. Raise DatasetError."""
    p, img_dir = Path(ann_path), Path(image_dir)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read annotation file: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{p}: a COCO annotation file is a JSON object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{p}: no '{key}' list (a COCO annotation file needs images, "
                               "annotations and categories)")
        if not isinstance(data[key], list):
            raise DatasetError(f"{p}: '{key}' must be a list")
    if not data["categories"]:
        raise DatasetError(f"{p}: 'categories' is empty")
    cat_ids = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            raise DatasetError(f"{p}: categories[{i}] needs an integer 'id'")
        cat_ids.add(c["id"])
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "width", "height"} <= set(im):
            raise DatasetError(f"{p}: images[{i}] needs id, file_name, width and height")
        if im["id"] in images:
            raise DatasetError(f"{p}: images[{i}]: duplicate image id {im['id']}")
        f = img_dir / im["file_name"]
        if not f.is_file():
            raise DatasetError(f"{p}: images[{i}] (id {im['id']}): image file {f} does not exist")
        images[im["id"]] = im
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not {"image_id", "category_id", "bbox"} <= set(a):
            raise DatasetError(f"{p}: annotations[{i}] needs image_id, category_id and bbox")
        aid = a.get("id", "?")
        if a["image_id"] not in images:
            raise DatasetError(f"{p}: annotations[{i}] (id {aid}): unknown image_id {a['image_id']}")
        if a["category_id"] not in cat_ids:
            raise DatasetError(f"{p}: annotations[{i}] (id {aid}): unknown category_id "
                               f"{a['category_id']} (categories: {sorted(cat_ids)})")
        bbox = a["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox)):
            raise DatasetError(f"{p}: annotations[{i}] (id {aid}): bbox must be 4 finite numbers "
                               f"[x, y, w, h], got {bbox!r}")
        x, y, w, h = bbox
        im = images[a["image_id"]]
        if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > im["width"] + tol \
                or y + h > im["height"] + tol:
            raise DatasetError(
                f"{p}: annotations[{i}] (id {aid}): bbox {bbox} is outside image {im['id']} "
                f"({im['file_name']}, {im['width']}x{im['height']}) or empty")
    return data


def write_manifest(out: str | Path, name: str, source: str,
                   splits: Mapping[str, tuple[str | Path, str | Path]],
                   categories: list[dict[str, Any]]) -> dict[str, Any]:
    man = {
        "name": name,
        "source": source,
        "categories": [{"id": c["id"], "name": c["name"]} for c in categories],
        "splits": {k: {"annotations": str(Path(a).resolve()), "images": str(Path(i).resolve())}
                   for k, (a, i) in splits.items()},
    }
    write_json_atomic(out, man)
    return man


def prepare_coco(ds: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Validate a user's COCO dataset and write its manifest (val, and calib if given)."""
    val = validate_coco(ds["annotations"], ds["images"])
    splits: dict[str, tuple[str | Path, str | Path]] = {"val": (ds["annotations"], ds["images"])}
    if ds.get("calib_annotations"):
        validate_coco(ds["calib_annotations"], ds.get("calib_images") or ds["images"])
        splits["calib"] = (ds["calib_annotations"], ds.get("calib_images") or ds["images"])
    else:
        splits["calib"] = splits["val"]
    return write_manifest(Path(out_dir) / "manifest.json", ds["name"], "coco", splits,
                          val["categories"])


# ---------------------------------------------------------------------------------------------
# the synthetic demo dataset

_SHAPES = ("disc", "square", "triangle", "cross", "ring")


def _draw_object(draw: Any, shape: str, cx: float, cy: float, s: float, color: tuple[int, ...],
                 rng: Any) -> tuple[float, float, float, float]:
    """Draw one object; return its exact extent (x1, y1, x2, y2), unclipped."""
    h = s / 2
    if shape == "disc":
        box = (cx - h, cy - h, cx + h, cy + h)
        draw.ellipse(box, fill=color)
    elif shape == "square":
        box = (cx - h, cy - h, cx + h, cy + h)
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        pts = [(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)]
        draw.polygon(pts, fill=color)
        box = (cx - h, cy - h, cx + h, cy + h)
    elif shape == "cross":
        t = s / 6
        draw.rectangle((cx - h, cy - t, cx + h, cy + t), fill=color)
        draw.rectangle((cx - t, cy - h, cx + t, cy + h), fill=color)
        box = (cx - h, cy - h, cx + h, cy + h)
    else:  # ring
        box = (cx - h, cy - h, cx + h, cy + h)
        draw.ellipse(box, outline=color, width=max(2, int(s / 6)))
    return box


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _make_image(rng: Any, index: int, syn: dict[str, Any], n_cats: int) -> tuple[Any, list[Any]]:
    import numpy as np
    from PIL import Image, ImageDraw

    w = int(rng.integers(syn["min_size"], syn["max_size"] + 1))
    h = int(rng.integers(syn["min_size"], syn["max_size"] + 1))
    # smooth background: a random gradient plus low-amplitude noise
    base = rng.integers(40, 200, size=3)
    gx = np.linspace(0, 1, w)[None, :, None] * rng.integers(-60, 60, size=3)
    gy = np.linspace(0, 1, h)[:, None, None] * rng.integers(-60, 60, size=3)
    bg = base + gx + gy
    bg += rng.normal(0, 8, size=(h, w, 3))  # in place: the same sums, two arrays fewer
    img = Image.fromarray(np.clip(bg, 0, 255, out=bg).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objects: list[Any] = []
    if rng.random() < syn["empty_fraction"]:
        return img, objects
    n = int(rng.integers(1, syn["max_objects"] + 1))
    placed: list[tuple[float, ...]] = []
    short = min(w, h)
    for _ in range(n * 4):
        if len(objects) >= n:
            break
        # log-uniform size: small (< 32^2), medium and large objects all occur
        s = float(math.exp(rng.uniform(math.log(12), math.log(0.7 * short))))
        margin = 0.3 * s  # centres may sit past the border: truncated objects
        cx = float(rng.uniform(-margin + s / 2 * 0.4, w + margin - s / 2 * 0.4))
        cy = float(rng.uniform(-margin + s / 2 * 0.4, h + margin - s / 2 * 0.4))
        full = (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)
        if any(_iou(full, q) > 0.3 for q in placed):
            continue
        clipped = (max(0.0, full[0]), max(0.0, full[1]), min(float(w), full[2]), min(float(h), full[3]))
        cw, ch = clipped[2] - clipped[0], clipped[3] - clipped[1]
        if cw < 6 or ch < 6 or cw * ch < 0.4 * s * s:
            continue
        k = int(rng.integers(0, n_cats))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if sum(abs(int(c) - int(b)) for c, b in zip(color, base, strict=True)) < 120:
            color = tuple(255 - int(b) for b in base)
        _draw_object(draw, _SHAPES[k % len(_SHAPES)], cx, cy, s, color, rng)
        placed.append(full)
        objects.append((k, clipped))
    return img, objects


def generate_synthetic(syn: dict[str, Any], name: str, out_dir: str | Path) -> dict[str, Any]:
    """Generate train/calib/val splits deterministically from ``syn['seed']``."""
    import numpy as np

    out = Path(out_dir)
    cats = syn["categories"]
    if not cats:
        raise DatasetError("dataset.synthetic.categories: the category list is empty")
    sizes = {k: syn[k] for k in SPLITS}
    if sizes["val"] < 1 or sizes["calib"] < 1:
        raise DatasetError(f"dataset.synthetic: val and calib need at least 1 image, got {sizes}")
    t0 = time.monotonic()
    splits = {}
    image_id = 1
    ann_id = 1
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng([syn["seed"], split_index])
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(sizes[split]):
            img, objects = _make_image(rng, i, syn, len(cats))
            fname = f"{split}_{i:05d}.jpg"
            import io

            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=92)
            write_bytes_atomic(img_dir / fname, buf.getvalue())
            images.append({"id": image_id, "file_name": fname, "width": img.width,
                           "height": img.height})
            for k, (x1, y1, x2, y2) in objects:
                bw, bh = x2 - x1, y2 - y1
                anns.append({"id": ann_id, "image_id": image_id, "category_id": cats[k]["id"],
                             "bbox": [round(x1, 2), round(y1, 2), round(bw, 2), round(bh, 2)],
                             "area": round(bw * bh, 2), "iscrowd": 0})
                ann_id += 1
            image_id += 1
        coco = {"info": {"description": f"quantsweep synthetic {split} split",
                         "seed": syn["seed"]},
                "images": images, "annotations": anns,
                "categories": [{"id": c["id"], "name": c["name"], "supercategory": "shape"}
                               for c in cats]}
        ann_path = out / "annotations" / f"{split}.json"
        write_json_atomic(ann_path, coco)
        splits[split] = (ann_path, img_dir)
    man = write_manifest(out / "manifest.json", name, "synthetic", splits, cats)
    man["seconds"] = round(time.monotonic() - t0, 2)
    return man


def prepare(ds: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    if ds["source"] == "synthetic":
        return generate_synthetic(ds["synthetic"], ds["name"], out_dir)
    return prepare_coco(ds, out_dir)


def load_manifest(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def split_checksum(manifest: dict[str, Any], split: str = "val") -> str:
    """sha256 of a split as the evaluation reads it: its annotation file and, in file-name
    order, the name and bytes of every image it lists. A GPU host's ``metrics.json`` carries it,
    so that AP scored on another split is refused when it comes back."""
    import hashlib

    entry = manifest["splits"][split]
    ann = Path(entry["annotations"])
    h = hashlib.sha256(ann.read_bytes())
    for name in sorted(im["file_name"] for im in json.loads(ann.read_text())["images"]):
        h.update(name.encode() + b"\0")
        h.update((Path(entry["images"]) / name).read_bytes())
    return h.hexdigest()
