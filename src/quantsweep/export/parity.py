"""Parity after an export: the source (framework, or the source ONNX) and the exported ONNX
on ONNX Runtime, fed the same calib images through the evaluation's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images
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


def _rows(outs: dict[str, Any]) -> np.ndarray | None:
    """The outputs as one table of detections [N, columns] when they are row-aligned (boxes
    [N,4] or [1,N,4], scores [N], labels [N]...: a data-dependent N of NMS output), else None."""
    arrays = [np.asarray(v, np.float64) for v in outs.values()]
    arrays = [a[0] if a.ndim >= 2 and a.shape[0] == 1 else a for a in arrays]
    if not arrays or any(a.ndim == 0 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
        return None
    return np.concatenate([a.reshape(a.shape[0], int(np.prod(a.shape[1:]))) for a in arrays], axis=1)


# where a decode layout keeps the detections' scores: (the decode key naming the output, the
# column in it, or None for an output that is the scores itself). Data, so that the export
# does not execute the decoder (quantsweep.codedigest).
SCORE_AT = {"paddle_bbox": ("bbox", 1), "separate": ("scores", None), "rows": ("output", "score")}
# scores this close are a tie: which of two near-tied boxes a top-k or NMS keeps is arbitrary
TIE_EPS = 1e-6


def score_ref(dec: dict[str, Any] | None) -> tuple[str | int, int | None] | None:
    """(output name or position, column) of the detections' scores for a decode block."""
    at = SCORE_AT.get((dec or {}).get("layout", ""))
    if at is None or at[0] not in (dec or {}):
        return None
    col = at[1]
    if isinstance(col, str):  # a named column of a rows table
        cols = list((dec or {}).get("columns") or [])
        if col not in cols:
            return None
        col = cols.index(col)
    return dec[at[0]], col  # type: ignore[index]


def _score_column(outs: dict[str, Any], score: tuple[str | int, int | None] | None,
                  left_out: set[str]) -> int | None:
    """The column of the scores in ``_rows`` of ``outs`` without the ``left_out`` (count)
    outputs; a position in ``score`` counts every output, as the decode block does."""
    if score is None:
        return None
    key, col = score
    offset = 0
    for pos, (name, v) in enumerate(outs.items()):
        if name in left_out:
            continue
        a = np.asarray(v)
        a = a[0] if a.ndim >= 2 and a.shape[0] == 1 else a
        if name == key or pos == key:
            return offset + (col or 0)
        offset += int(np.prod(a.shape[1:])) if a.ndim else 1
    return None


def _explained_by_ties(a: np.ndarray, b: np.ndarray, ua: list[int], ub: list[int], s: int) -> bool:
    """Rows left unmatched on both sides that a cut explains, not a broken graph: a few rows,
    as many on each side, and either (1) each has a score within ``TIE_EPS`` of another row's
    or is among the lowest-scored rows of its table, or (2) all of one side's are among its
    lowest-scored rows: the other runtime kept detections this one did not, and the top-k cut
    pushed out as many of this one's weakest. (2) is how a decoder's discrete step flips on a
    last-bit difference with no twin left in the outputs: in the demo's CenterNet peak test
    (``hm == max_pool(hm)``) two neighbouring heatmap values were 0.03937829 and 0.03937827 in
    torch and equal in ONNX Runtime, so ONNX Runtime kept both as peaks, and the neighbour's
    row carried another class's higher score. A box each runtime alone kept above the cut is
    still a difference."""
    if len(ua) != len(ub) or len(ua) > max(1, len(a) // 10):
        return False

    def at_cut(table: np.ndarray, unmatched: list[int]) -> list[bool]:
        lowest = np.sort(table[:, s])[len(unmatched) - 1] if unmatched else -np.inf
        return [bool(table[i, s] <= lowest) for i in unmatched]

    cut_a, cut_b = at_cut(a, ua), at_cut(b, ub)
    if all(cut_a) or all(cut_b):
        return True
    scores = np.concatenate([a[:, s], b[:, s]])
    for table, unmatched, cut in ((a, ua, cut_a), (b, ub, cut_b)):
        for i, at in zip(unmatched, cut, strict=True):
            if np.sum(np.abs(scores - table[i, s]) <= TIE_EPS) < 2 and not at:
                return False
    return True


def row_distance(ref: dict[str, Any], cand: dict[str, Any],
                 score: tuple[str | int, int | None] | None = None, tol: float = 0.0) -> float | None:
    """Largest |difference| between the detections of ``ref`` and ``cand`` matched as rows in any
    order (each reference row to its nearest unmatched candidate row); inf when the row counts
    differ; None when the outputs are not row tables. NMS exported to ONNX returns its kept boxes
    grouped differently from the framework's eager order: a positional comparison fails there.
    With ``score`` (where the scores are, ``score_ref``), pairs further apart than ``tol`` that
    near-tied scores explain (``_explained_by_ties``: two runtimes kept different boxes of equal
    score at a top-k or NMS cut) are left out of the distance."""
    # a count output beside the rows (PaddleDetection's bbox_num [B], num_dets [B,1]): one
    # value per image, compared as it is
    ref_counts = [np.asarray(v, np.float64) for v in ref.values() if np.asarray(v).size == 1]
    cand_counts = [np.asarray(v, np.float64) for v in cand.values() if np.asarray(v).size == 1]
    counts: set[str] = set()
    if ref_counts and len(ref_counts) < len(ref):
        if len(ref_counts) != len(cand_counts):
            return None
        if any(float(x.ravel()[0]) != float(y.ravel()[0]) for x, y in zip(ref_counts, cand_counts, strict=True)):
            return float("inf")
        counts = {k for k, v in ref.items() if np.asarray(v).size == 1}
    s = _score_column(ref, score, counts)
    ref = {k: v for k, v in ref.items() if k not in counts}
    cand = {k: v for k, v in cand.items() if np.asarray(v).size != 1} if counts else cand
    a, b = _rows(ref), _rows(cand)
    if a is None or b is None or a.shape[1] != b.shape[1]:
        return None
    if a.shape[0] != b.shape[0]:
        return float("inf")
    if not a.shape[0]:
        return 0.0
    dist = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
    pairs, free = [], np.ones(len(b), bool)
    for i in np.argsort(dist.min(axis=1), kind="stable"):
        j = int(np.argmin(np.where(free, dist[i], np.inf)))
        pairs.append((int(i), j, float(dist[i, j])))
        free[j] = False
    worst = max(d for _, _, d in pairs)
    if worst > tol and s is not None:
        far = [(i, j) for i, j, d in pairs if d > tol]
        if _explained_by_ties(a, b, [i for i, _ in far], [j for _, j in far], s):
            return max((d for _, _, d in pairs if d <= tol), default=0.0)
    return worst


def compare(reference: Any, candidate: Any, spec: dict[str, Any], manifest: dict[str, Any],
            tolerance: dict[str, Any], score: Any = None) -> dict[str, Any]:
    """Run both on ``tolerance['images']`` calib images; outputs are matched by position (a
    framework's fetch names need not be the graph's output names). ``score``: where the
    detections' scores are (``score_ref`` of the decode block), for the row matching."""
    images = val_images(manifest, "calib", int(tolerance["images"]))
    score = tuple(score) if score else None
    stats: list[OutputStats] = []
    row_dist: list[float | None] = []
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
        row_dist.append(row_distance(ref, cand, score, float(tolerance["max_abs"])))
    outputs = [s.record() for s in stats]
    problems = []
    for o in outputs:
        if not o["shape_match"]:
            problems.append(f"output {o['output']}: shapes differ ({'; '.join(o['shapes'])})")
        elif o["max_abs"] > tolerance["max_abs"] or o["cosine"] < tolerance["min_cosine"]:
            problems.append(f"output {o['output']}: max_abs {o['max_abs']:.3g} (tolerance "
                            f"{tolerance['max_abs']}), cosine {o['cosine']:.6f} (tolerance "
                            f"{tolerance['min_cosine']})")
    rec = {"ok": not problems, "images": len(images), "tolerance": tolerance,
           "outputs": outputs, "problems": problems, "matched": "by position"}
    if problems and row_dist and all(d is not None for d in row_dist):
        worst = max(d for d in row_dist if d is not None)
        rec["rows_max_abs"] = worst if np.isfinite(worst) else None
        if worst <= tolerance["max_abs"]:  # the same detections, in another order
            rec.update(ok=True, matched="as detection rows in any order", problems=[],
                       position_problems=problems)
        else:
            problems.append(f"matched as detection rows in any order: max_abs {worst:.3g}"
                            + (" (row counts differ)" if worst == float("inf") else ""))
    return rec
