"""Parity after an export: the source (framework, or the source ONNX) and the exported ONNX
on ONNX Runtime, fed the same calib images through the evaluation's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantsweep.evaluate.loop import iter_preprocessed, val_images
from quantsweep.evaluate.preprocess import build_feeds
from quantsweep.job import tool_call


@dataclass
class OutputStats:
    """Running comparison of one output over the images."""

    ref_name: str
    name: str
    shapes: set[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=set)
    max_abs: float = 0.0
    abs_sum: float = 0.0
    count: int = 0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        self.shapes.add((tuple(ref.shape), tuple(cand.shape)))
        if ref.shape != cand.shape:
            return
        a = ref.astype(np.float64).ravel()
        b = cand.astype(np.float64).ravel()
        if a.size:
            d = np.abs(a - b)
            self.max_abs = max(self.max_abs, float(np.nan_to_num(d, nan=np.inf).max()))
            self.abs_sum += float(d.sum())
            self.count += a.size
            self.dot += float(a @ b)
            self.ref_sq += float(a @ a)
            self.cand_sq += float(b @ b)

    def record(self) -> dict[str, Any]:
        same = all(r == c for r, c in self.shapes)
        if self.ref_sq == 0.0 and self.cand_sq == 0.0:
            cos = 1.0
        elif self.ref_sq == 0.0 or self.cand_sq == 0.0:
            cos = 0.0
        else:
            cos = self.dot / float(np.sqrt(self.ref_sq * self.cand_sq))
        return {"output": self.name, "reference_output": self.ref_name,
                "shape_match": same,
                "shapes": sorted({f"{list(r)} vs {list(c)}" for r, c in self.shapes if r != c}),
                "max_abs": self.max_abs if same else None,
                "mean_abs": self.abs_sum / self.count if same and self.count else 0.0 if same else None,
                "cosine": round(cos, 9) if same else None}


def compare(reference: Any, candidate: Any, spec: dict[str, Any], manifest: dict[str, Any],
            tolerance: dict[str, Any]) -> dict[str, Any]:
    """Run both on ``tolerance['images']`` calib images; outputs are matched by position (a
    framework's fetch names need not be the graph's output names)."""
    images = val_images(manifest, "calib", int(tolerance["images"]))
    stats: list[OutputStats] = []
    for im, x, meta in iter_preprocessed(images, spec["preprocess"]):
        feeds = build_feeds([x], [meta], spec["inputs"])
        with tool_call("export_parity", f"the reference model on {im['file_name']}"):
            ref = reference.infer(feeds)
        with tool_call("export_parity", f"ONNX Runtime on the exported model, {im['file_name']}"):
            cand = candidate.infer(feeds)
        if len(ref) != len(cand):
            return {"ok": False, "images": len(images), "tolerance": tolerance, "outputs": [],
                    "problems": [f"the reference has {len(ref)} outputs {list(ref)}, the ONNX "
                                 f"model {len(cand)} {list(cand)}"]}
        if not stats:
            stats = [OutputStats(r, c) for r, c in zip(ref, cand, strict=True)]
        for s, r, c in zip(stats, ref.values(), cand.values(), strict=True):
            s.add(np.asarray(r), np.asarray(c))
    outputs = [s.record() for s in stats]
    problems = []
    for o in outputs:
        if not o["shape_match"]:
            problems.append(f"output {o['output']}: shapes differ ({'; '.join(o['shapes'])})")
        elif o["max_abs"] > tolerance["max_abs"] or o["cosine"] < tolerance["min_cosine"]:
            problems.append(f"output {o['output']}: max_abs {o['max_abs']:.3g} (tolerance "
                            f"{tolerance['max_abs']}), cosine {o['cosine']:.6f} (tolerance "
                            f"{tolerance['min_cosine']})")
    return {"ok": not problems, "images": len(images), "tolerance": tolerance,
            "outputs": outputs, "problems": problems}
