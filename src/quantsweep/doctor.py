"""``quantsweep doctor``: every check on one cell, each finding with its evidence (file, tensor,
value) and the fix. The checks are the field reports this tool exists to catch:

- 000 ``quantized_on_float_backend``: a quantized Paddle model run in a float configuration;
- 001 ``cache_*``: a calibration cache TensorRT would ignore, or with bad or foreign entries;
- 002 ``runtime_scales``: Q/DQ scales computed at run time (QAT exported with dynamic amax);
- 003 ``no_implementation``: TensorRT found no INT8 kernel for a (fused) layer;
- 004 ``zero_boxes`` and the other detection checks: what the boxes say when AP collapses
  (all zero, normalized, xywh vs xyxy, class-id offset, constant scores), with the input dtype
  conversions the runner made;
- ``known_failures.KNOWN_FAILURES``: an upstream stage that failed the way a tool version is
  known to (e.g. Paddle 3.x's legacy ``jit.save``), with the proven fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantsweep import matrix, paths
from quantsweep.status import stage_status

SEVERITIES = ("error", "warning", "info")
CACHE_BACKENDS = ("tensorrt_sim", "tensorrt_api", "trtexec")
NEAR_ZERO_AP = 0.05  # "AP collapsed": below this while the FP32 sibling is above 4x it


class DoctorError(ValueError):
    pass


def finding(severity: str, code: str, message: str, fix: str = "", seed: str = "",
            **evidence: Any) -> dict[str, Any]:
    return {"severity": severity, "code": code, "seed": seed, "message": message, "fix": fix,
            "evidence": evidence}


def resolve(arg: str, results: Path) -> dict[str, Any]:
    """A cell id, or a path inside a cell's results directory -> the cell's axes."""
    text = str(arg).rstrip("/")
    p = Path(text)
    try:
        rel = p.resolve().relative_to(results.resolve())
        text = str(rel)
    except ValueError:
        pass
    parts = text.split("/")
    for k in range(len(parts) - 5):
        axes = parts[k:k + 6]
        if axes[2].startswith("opset") and axes[2][5:].isdigit():
            return dict(zip(matrix.AXES, [axes[0], axes[1], int(axes[2][5:]), *axes[3:]], strict=True))
    raise DoctorError(f"{arg}: not a cell id (model/toolset/opsetN/quantizer/precision/backend) "
                      f"nor a path inside one under {results}")


def _status(results: Path, stage: str, axes: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    return paths.fill(results, stage, "status.json", **axes), stage_status(results, stage, **axes)


def _path(p: str | None, root: Path) -> Path | None:
    if not p:
        return None
    q = Path(p)
    return q if q.is_absolute() else root / q


def diagnose(results: Path, axes: dict[str, Any], annotations: Path | None = None,
             root: Path = Path(".")) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    recs = {s: _status(results, s, axes) for s in ("quantize", "build", "evaluate")}
    if all(r is None for _, r in recs.values()):
        raise DoctorError(f"{paths.cell_id(**axes)}: no status under {results}: run the sweep first")
    (qp, q), (bp, b), (ep, ev) = recs["quantize"], recs["build"], recs["evaluate"]
    out += check_known_failures(results, axes)
    ap, fp32_ap = _ap(results, axes), _fp32_ap(results, axes)
    out += check_float_backend(axes, bp, b, ap, fp32_ap)
    if q and q["status"] == "ok":
        if axes["backend"] in CACHE_BACKENDS:  # the cells that read the calibration cache
            out += check_cache(q, qp, axes, root)
        out += check_runtime_scales(q, qp, root)
    if b:
        out += check_build_errors(b, bp)
    out += check_analysis(results, axes, q)
    if ev and ev["status"] == "ok":
        dets = _path(ev["artifacts"].get("detections"), root)
        conv = ev.get("data", {}).get("input_conversions") or []
        collapsed = ap is not None and ap < NEAR_ZERO_AP and (fp32_ap is None or fp32_ap > 4 * NEAR_ZERO_AP)
        if dets and dets.exists() and annotations and annotations.exists():
            out += check_detections(dets, annotations, collapsed, conv)
        out += check_foreign(ev, ep)
        if collapsed and fp32_ap is not None:
            out.append(finding("error", "ap_collapsed", f"AP {ap:.4f} while the FP32 sibling has "
                               f"{fp32_ap:.4f}", seed="000/004", file=str(ep), value=ap))
    return out


def _ap(results: Path, axes: dict[str, Any]) -> float | None:
    m = paths.fill(results, "evaluate", "metrics.json", **axes)
    return json.loads(m.read_text()).get("AP") if m.exists() else None


def _fp32_ap(results: Path, axes: dict[str, Any]) -> float | None:
    for backend in (axes["backend"], "onnxruntime"):
        sib = {**axes, "quantizer": "none", "precision": "fp32", "backend": backend}
        if sib == axes:
            return None
        ap = _ap(results, sib)
        if ap is not None:
            return ap
    return None


# ---- 000 ---------------------------------------------------------------------------------

def check_float_backend(axes: dict[str, Any], bp: Path, b: dict[str, Any] | None, ap: float | None,
                        fp32_ap: float | None) -> list[dict[str, Any]]:
    if not b or b["status"] != "ok" or axes["backend"] != "paddle_inference":
        return []
    if axes["quantizer"] == "none":
        return []
    severity = "error" if ap is not None and ap < NEAR_ZERO_AP else "warning"
    return [finding(severity, "quantized_on_float_backend",
                    f"a {axes['quantizer']}-quantized Paddle model run in Paddle Inference's float "
                    f"(CPU) configuration: its quantize/dequantize ops run in float"
                    + (f"; AP {ap:.4f} vs FP32 {fp32_ap:.4f}" if ap is not None and fp32_ap else ""),
                    fix="run it with backend paddle_tensorrt: Paddle-TRT with precision_mode Int8 and "
                        "use_calib_mode=False (the model carries its scales), on a Paddle built with "
                        "CUDA and TensorRT",
                    seed="000", file=str(bp), value=b.get("data", {}).get("note", ""))]


# ---- 001 ---------------------------------------------------------------------------------

def check_cache(q: dict[str, Any], qp: Path, axes: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    from quantsweep import calib
    from quantsweep.calib.inspect import DEFAULT_TRT_VERSIONS, inspect_cache

    cache_path = _path(q["artifacts"].get("calibration_cache"), root)
    if cache_path is None or not cache_path.exists():
        return []
    try:
        cache = calib.read(cache_path)
    except calib.CacheError as exc:
        return [finding("error", "cache_unreadable", str(exc), seed="001", file=str(cache_path))]
    graph = _path(q["artifacts"].get("float_model"), root)
    rep = inspect_cache(cache, graph if graph and graph.exists() else None, DEFAULT_TRT_VERSIONS)
    out = []
    for f in rep["findings"]:
        if f["severity"] == "info":
            continue
        out.append(finding(f["severity"], f"cache_{f['code']}", f["message"], seed="001",
                           fix="regenerate the cache from this graph" if f["code"] != "bad_scale"
                           else "recalibrate: TensorRT cannot quantize with a zero, NaN, inf or "
                                "negative scale", file=str(cache_path), tensor=f.get("tensor", ""),
                           value=f.get("value", "")))
    ignored = [c for c in rep["compatibility"] if c["verdict"] == "ignored"]
    used = [c["tensorrt"] for c in rep["compatibility"] if c["verdict"] == "used"]
    if ignored:
        out.append(finding("warning", "cache_ignored_by",
                           f"header {rep['header'].strip()!r}: TensorRT "
                           f"{', '.join(c['tensorrt'] for c in ignored)} would ignore this cache and "
                           f"calibrate without data" + (f"; {', '.join(used)} use it" if used else ""),
                           fix="build those TensorRT versions from the Q/DQ graph (explicit "
                               "quantization) instead of --int8 --calib",
                           seed="001", file=str(cache_path), value=rep["header"].strip()))
    return out


# ---- 002 ---------------------------------------------------------------------------------

def check_runtime_scales(q: dict[str, Any], qp: Path, root: Path) -> list[dict[str, Any]]:
    import onnx

    from quantsweep.quantize import runtime_scale_findings

    model = _path(q["artifacts"].get("model"), root)
    if not q.get("data", {}).get("int8") or model is None or not model.exists():
        return []
    m = onnx.load(str(model), load_external_data=False)
    return [finding("error", "runtime_scales", f["message"], seed="002",
                    fix="export the QAT model with static (learned/calibrated) amax so every scale "
                        "is a constant of the graph",
                    file=str(model), tensor=f["tensor"], node=f["node"])
            for f in runtime_scale_findings(m)]


def check_analysis(results: Path, axes: dict[str, Any], q: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An analysed INT8 cell: its most sensitive layers with their numbers and the recipe; a
    recipe cell: the layers it keeps in float, and whether the recipe met its target."""
    from quantsweep.quantize import recipe_parent

    out: list[dict[str, Any]] = []
    parent = recipe_parent(axes["quantizer"])
    ap_, an = _status(results, "analyze", {**axes, "quantizer": parent or axes["quantizer"]})
    if an is None or an["status"] != "ok":
        return out
    d = an["data"]
    recipe = an["artifacts"].get("recipe", "")
    if parent is None:
        for t in (d.get("top_layers") or [])[:3]:
            ap_note = (f"; alone in float it wins back {t['ap_recovered']:+.4f} AP, alone in INT8 it "
                       f"costs {t['ap_drop']:.4f} AP" if t.get("ap_recovered") is not None else "")
            out.append(finding("info", "sensitive_layer",
                               f"{t['op']} {t['layer']!r}: leaving it in float brings the outputs "
                               f"{t['error_recovered']:.4g} closer to FP32 (1 - cosine){ap_note}",
                               fix=f"the recipe {recipe} keeps {len(d['float_layers'])} layer(s) in "
                                   f"float: {d['float_layers'][:5]}",
                               file=str(ap_.with_name("sensitivity.json")), layer=t["layer"],
                               value=t.get("ap_recovered")))
        return out
    rec = ((q or {}).get("data") or {}).get("recipe") or {}
    if rec and not rec.get("target_met"):
        out.append(finding("warning", "recipe_target_missed", rec.get("note", ""),
                           fix="raise analyze.max_float_layers or analyze.top_k, or accept the loss",
                           file=recipe, value=rec.get("AP_recipe")))
    elif rec:
        out.append(finding("info", "recipe", f"{len(rec['float_layers'])} layer(s) kept in float: "
                           f"{rec['float_layers'][:5]} (AP on {rec.get('val_images')} val images: "
                           f"INT8 {rec.get('AP_int8')}, recipe {rec.get('AP_recipe')}, FP32 "
                           f"{rec.get('AP_fp32')})", file=recipe,
                           layer=(rec["float_layers"] or [""])[0], value=rec.get("AP_recipe")))
    return out


# ---- 003 ---------------------------------------------------------------------------------

def check_build_errors(b: dict[str, Any], bp: Path) -> list[dict[str, Any]]:
    if b["status"] != "failed" or b["reason_class"] != "no_implementation":
        return []
    fb = b.get("data", {}).get("fallback") or {}
    node = ""
    if fb.get("layer_precisions"):
        node = ", ".join(fb["layer_precisions"])
    fix = ("the fallback built it with that layer in FP16 (row " + b["cell"] + f"+fallback-{fb['policy']})"
           if fb.get("status") == "ok" else
           "set tensorrt.fallback: fp16-layers (the layer in FP16) or fp16; or build on TensorRT 10, "
           "which has the kernel")
    return [finding("error", "no_implementation",
                    f"TensorRT {b.get('tool_versions', {}).get('tensorrt', '')} found no INT8 "
                    f"implementation: {b['message'].splitlines()[0]}",
                    fix=fix, seed="003", file=str(bp), node=node,
                    versions="TensorRT 8.6.1 (field report 003); fixed in 10.x")]


# ---- known tool failures, by the stage and the tool's own words ---------------------------------

def check_known_failures(results: Path, axes: dict[str, Any]) -> list[dict[str, Any]]:
    """The cell's upstream stages (framework, export) that failed the way a known tool failure
    does."""
    from quantsweep.known_failures import KNOWN_FAILURES, shows

    out = []
    for k in KNOWN_FAILURES:
        if k["stage"] == "outside":
            continue
        sp, rec = _status(results, k["stage"], axes)
        if rec and rec["status"] == "failed" and shows(k, rec.get("message", "")):
            tv = rec.get("tool_versions", {})
            versions = ", ".join(f"{p} {tv[p]}" for p in ("paddlepaddle", "paddle2onnx", "torch") if p in tv)
            out.append(finding("error", k["code"], f"{k['stage']} failed: {k['why']}", fix=k["fix"],
                               file=str(sp), tool_message=rec["message"].splitlines()[0][:300],
                               versions=versions))
    return out


# ---- 004 and the zero-mAP doctor -------------------------------------------------------------

def check_detections(dets_path: Path, annotations: Path, collapsed: bool,
                     conversions: list[dict[str, str]]) -> list[dict[str, Any]]:
    import numpy as np

    dets = json.loads(dets_path.read_text())
    gt = json.loads(annotations.read_text())
    out: list[dict[str, Any]] = []
    f = str(dets_path)
    if not dets:
        return [finding("error", "no_detections", "the cell wrote no detections at all",
                        fix="check the score threshold and the decode mapping of the outputs",
                        file=f, value=0)]
    boxes = np.array([d["bbox"] for d in dets], dtype=float)
    scores = np.array([d["score"] for d in dets], dtype=float)
    wh = boxes[:, 2:]
    imgs = {i["id"]: i for i in gt.get("images", [])}
    zero = np.all(np.abs(boxes) < 1e-6, axis=1)
    if imgs and np.mean(zero) < 0.5 and np.percentile(np.abs(boxes), 99) <= 1.5 and \
            min(i["width"] for i in imgs.values()) > 4:
        out.append(finding("error", "normalized_boxes", "boxes are within [0, 1.5]: normalized "
                           "coordinates where COCO wants pixels", fix="scale by the image size "
                           "(decode coordinates: normalized, or normalized_input for boxes "
                           "relative to the network input)", file=f, value=boxes[0].tolist()))
    elif np.all(zero) or np.mean((wh[:, 0] <= 0.5) | (wh[:, 1] <= 0.5)) > 0.95:
        out.append(finding("error", "zero_boxes", f"{np.mean(np.all(np.abs(boxes) < 1e-6, axis=1)):.0%} "
                           f"of {len(boxes)} boxes are all zero, {np.mean(wh.min(axis=1) <= 0.5):.0%} "
                           f"are degenerate (w or h <= 0.5 px)",
                           fix="check each input's dtype against the engine binding (an int64 "
                               "orig_target_sizes read as int32 scales every box by 0: field report "
                               "004) and the box decoding", seed="004", file=f, value=boxes[0].tolist()))
    if len(scores) > 10 and float(np.ptp(scores)) < 1e-6:
        out.append(finding("warning", "constant_scores", f"all {len(scores)} scores equal "
                           f"{scores[0]:.4g}: the ranking carries no information", file=f,
                           value=float(scores[0])))
    cats = {c["id"] for c in gt.get("categories", [])}
    det_cats = {d["category_id"] for d in dets}
    if cats and det_cats - cats:
        shifted = {c + 1 for c in det_cats} <= cats or {c - 1 for c in det_cats} <= cats
        out.append(finding("error", "class_ids", f"category ids {sorted(det_cats - cats)[:5]} are "
                           f"not categories of {annotations.name}"
                           + (" (an off-by-one: contiguous vs dataset ids)" if shifted else ""),
                           fix="map the model's class index to the dataset's category ids",
                           file=f, value=sorted(det_cats - cats)[:5]))
    unknown = {d["image_id"] for d in dets} - set(imgs)
    if imgs and unknown:
        out.append(finding("error", "unknown_image_ids", f"{len(unknown)} image ids are not in "
                           f"{annotations.name}", file=f, value=sorted(unknown)[:5]))
    if collapsed and not out:
        out += _layout_hint(dets, gt, f)
    if collapsed:
        out += _class_offset_hint(dets, gt, f)
    for c in conversions:
        out.append(finding("info", "input_converted", f"input {c['name']!r} was fed {c['fed']} and "
                           f"converted to the binding's {c['bound']} (lossless)", seed="004",
                           file=f, tensor=c["name"], value=f"{c['fed']}->{c['bound']}"))
    return out


def check_foreign(ev: dict[str, Any], ep: Path) -> list[dict[str, Any]]:
    """Detections of categories the dataset lacks were dropped before scoring."""
    data = ev.get("data", {})
    n = data.get("foreign_detections") or 0
    out = []
    if n:
        ids = data.get("foreign_category_ids") or {}
        out.append(finding("warning", "foreign_detections", f"{n} detections named category ids "
                           f"the dataset does not have ({', '.join(list(ids)[:10])}) and were "
                           f"dropped before scoring", fix="check decode.label_map (dataset, "
                           "coco80, coco91, names or a list): a model trained on another class "
                           "set, or contiguous indices read as COCO ids", file=str(ep), value=n))
    if data.get("unmatched_class_names"):
        names = data["unmatched_class_names"]
        out.append(finding("info", "unmatched_class_names", f"{len(names)} of the model's class "
                           f"names match no dataset category: {names[:8]}", file=str(ep),
                           value=names[:8]))
    return out


def _class_offset_hint(dets: list[dict[str, Any]], gt: dict[str, Any], f: str) -> list[dict[str, Any]]:
    """Boxes that sit on ground truth of another class, all shifted by the same number of
    positions in the dataset's category order: class indices read with the wrong label map."""
    import numpy as np

    order = {c["id"]: i for i, c in enumerate(sorted(gt.get("categories", []), key=lambda c: c["id"]))}
    by_img: dict[int, list[dict[str, Any]]] = {}
    for a in gt.get("annotations", []):
        by_img.setdefault(a["image_id"], []).append(a)
    shifts = []
    for d in sorted(dets, key=lambda d: -d["score"])[:500]:
        anns = by_img.get(d["image_id"])
        if not anns or d["category_id"] not in order:
            continue
        g = np.array([a["bbox"] for a in anns], float)
        b = np.array(d["bbox"], float)
        w = np.clip(np.minimum(b[0] + b[2], g[:, 0] + g[:, 2]) - np.maximum(b[0], g[:, 0]), 0, None)
        h = np.clip(np.minimum(b[1] + b[3], g[:, 1] + g[:, 3]) - np.maximum(b[1], g[:, 1]), 0, None)
        iou = w * h / np.maximum(b[2] * b[3] + g[:, 2] * g[:, 3] - w * h, 1e-9)
        k = int(np.argmax(iou))
        if iou[k] >= 0.5 and anns[k]["category_id"] in order:
            shifts.append(order[d["category_id"]] - order[anns[k]["category_id"]])
    if len(shifts) < 5:
        return []
    vals, counts = np.unique(shifts, return_counts=True)
    top = int(vals[np.argmax(counts)])
    share = counts.max() / len(shifts)
    if top == 0 or share < 0.5:
        return []
    return [finding("error", "class_offset", f"{share:.0%} of {len(shifts)} detections that sit "
                    f"on a ground-truth box name the category {top:+d} positions away from it in "
                    f"the dataset's category order", fix="check decode.label_map: contiguous "
                    "indices (coco80) vs category ids (coco91), a background class at 0, or "
                    "1-based labels", file=f, value=top)]


def _layout_hint(dets: list[dict[str, Any]], gt: dict[str, Any], f: str) -> list[dict[str, Any]]:
    """AP collapsed with sane-looking boxes: xyxy written as xywh scores better against the GT?"""
    import numpy as np

    by_img: dict[int, list[list[float]]] = {}
    for a in gt.get("annotations", []):
        by_img.setdefault(a["image_id"], []).append(a["bbox"])

    def best_iou(xywh: np.ndarray, img: int) -> float:
        g = np.array(by_img.get(img, []), dtype=float)
        if not len(g):
            return 0.0
        x1 = np.maximum(xywh[0], g[:, 0])
        y1 = np.maximum(xywh[1], g[:, 1])
        x2 = np.minimum(xywh[0] + xywh[2], g[:, 0] + g[:, 2])
        y2 = np.minimum(xywh[1] + xywh[3], g[:, 1] + g[:, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = xywh[2] * xywh[3] + g[:, 2] * g[:, 3] - inter
        return float(np.max(inter / np.maximum(union, 1e-9)))

    top = sorted(dets, key=lambda d: -d["score"])[:200]
    as_is = np.array([best_iou(np.array(d["bbox"], float), d["image_id"]) for d in top])
    fixed = np.array([best_iou(np.array([d["bbox"][0], d["bbox"][1], d["bbox"][2] - d["bbox"][0],
                                         d["bbox"][3] - d["bbox"][1]], float), d["image_id"])
                      for d in top])
    # boxes that sit on a ground-truth box (IoU >= 0.75) as written vs read as x1,y1,x2,y2
    hit_as_is, hit_fixed = float(np.mean(as_is >= 0.75)), float(np.mean(fixed >= 0.75))
    if hit_fixed >= 0.3 and hit_fixed > 2 * hit_as_is:
        return [finding("error", "xyxy_as_xywh", f"read as x1,y1,x2,y2, {hit_fixed:.0%} of the top "
                        f"boxes sit on a ground-truth box (IoU >= 0.75) vs {hit_as_is:.0%} as "
                        f"written (mean best IoU {fixed.mean():.2f} vs {as_is.mean():.2f})",
                        fix="convert x2,y2 to width,height (decode layout)", file=f,
                        value=top[0]["bbox"])]
    return []


def format_findings(cell: str, findings: list[dict[str, Any]], per_code: int = 3) -> str:
    """Errors first; at most ``per_code`` findings of one code, then how many more."""
    if not findings:
        return f"{cell}: no findings"
    lines = [f"{cell}: {sum(f['severity'] == 'error' for f in findings)} errors, "
             f"{sum(f['severity'] == 'warning' for f in findings)} warnings"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in sorted(findings, key=lambda f: SEVERITIES.index(f["severity"])):
        groups.setdefault((f["severity"], f["code"]), []).append(f)
    for (sev, code), fs in groups.items():
        for f in fs[:per_code]:
            seed = f" [field report {f['seed']}]" if f["seed"] else ""
            lines.append(f"{sev.upper():7} {code}{seed}: {f['message']}")
            ev = ", ".join(f"{k}={v}" for k, v in f["evidence"].items() if v not in ("", None, []))
            if ev:
                lines.append(f"        evidence: {ev}")
        if len(fs) > per_code:
            lines.append(f"        ... and {len(fs) - per_code} more {code} (--json lists them all)")
        if fs[0]["fix"]:
            lines.append(f"        fix: {fs[0]['fix']}")
    return "\n".join(lines)
