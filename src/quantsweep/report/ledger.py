"""The precision-loss ledger: per model × toolset × opset, where the AP goes between the framework
FP32 model, the ONNX FP32 export, each INT8 graph (per quantizer and backend, measured or
simulated) and the TensorRT engine; and, for the largest INT8 drop, the first tensor (in graph
order) where the INT8 graph's values leave the FP32 graph's, both run on ONNX Runtime."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

KEY = ["model", "toolset", "opset"]
ENGINE_BACKENDS = ("tensorrt_api", "trtexec")  # TensorRT engines (built here, or on a GPU host)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _fp32_onnx(summary: Any, g: Any, model: str, opset: Any) -> Any:
    """The ONNX FP32 row of a chain: on ONNX Runtime in its own toolset, else (a TensorRT
    toolset, whose engines are built from a graph another toolset made) in any toolset."""
    def fp32(rows: Any) -> Any:
        return rows[(rows.quantizer == "none") & (rows.precision == "fp32") & (rows.backend == "onnxruntime")
                    & rows["AP"].notna()]

    own = fp32(g)
    if len(own) or not g.backend.isin(ENGINE_BACKENDS).any():
        return own
    return fp32(summary[(summary.model == model) & (summary.opset == opset)])


def steps(summary: Any) -> list[dict[str, Any]]:
    """One step per link of each chain, with the AP on both sides and the change; for a
    TensorRT engine whose CPU estimate exists, the step from the estimate to the engine."""
    out: list[dict[str, Any]] = []
    for (model, toolset, opset), g in summary.groupby(KEY, sort=True):
        fp32 = _fp32_onnx(summary, g, model, opset)
        onnx_ap = _num(fp32["AP"].iloc[0]) if len(fp32) else None
        fw_ap = _num(g["framework_AP"].dropna().iloc[0]) if g["framework_AP"].notna().any() else None
        base = {"model": model, "toolset": toolset, "opset": int(opset)}
        if fw_ap is not None and onnx_ap is not None:
            out.append({**base, "step": "framework FP32 -> ONNX FP32", "from_AP": fw_ap,
                        "to_AP": onnx_ap, "delta": round(onnx_ap - fw_ap, 6), "mode": "measured",
                        "to_cell": fp32["cell"].iloc[0],
                        "exporter": _text(fp32["exporter"].iloc[0]) if "exporter" in fp32 else None})
        if onnx_ap is None:
            continue
        for _, r in g.iterrows():
            ap = _num(r.get("AP"))
            if r["precision"] == "fp32" and r["quantizer"] == "none" and r["backend"] == "onnxruntime" \
                    or ap is None:
                continue
            engine = r["backend"] in ENGINE_BACKENDS
            what = (f"INT8 {r['quantizer']}" if r["precision"] == "int8" else r["precision"].upper()) \
                + (f" TensorRT engine ({r['backend']}, {r.get('device')})" if engine else f" on {r['backend']}")
            step = {**base, "step": f"ONNX FP32 -> {what}", "from_AP": onnx_ap, "to_AP": ap,
                    "delta": round(ap - onnx_ap, 6), "mode": r["mode"], "to_cell": r["cell"]}
            if fp32["cell"].iloc[0] not in set(g["cell"]):
                step["from_cell"] = fp32["cell"].iloc[0]
            out.append(step)
            sim = _num(r.get("simulated_AP"))
            if engine and sim is not None:
                out.append({**base, "step": f"INT8 {r['quantizer']} simulated -> {what}", "from_AP": sim,
                            "to_AP": ap, "delta": round(ap - sim, 6), "mode": r["mode"],
                            "from_cell": r.get("simulated_sibling"), "to_cell": r["cell"]})
        out.extend(recipe_steps(g, base, onnx_ap))
    return out


def recipe_steps(g: Any, base: dict[str, Any], onnx_ap: float) -> list[dict[str, Any]]:
    """INT8 -> INT8 + recipe: the AP a recipe cell wins back over its parent INT8 cell (and the
    share of the parent's loss that is), and its speed vs the parent and vs FP32."""
    if "recipe_of" not in g:
        return []
    cells = g.set_index("cell")
    out = []
    for _, r in g[g["recipe_of"].notna()].iterrows():
        ap = _num(r.get("AP"))
        if ap is None or r["recipe_of"] not in cells.index:
            continue
        par = cells.loc[r["recipe_of"]]
        par_ap = _num(par.get("AP"))
        if par_ap is None:
            continue
        loss = onnx_ap - par_ap
        out.append({**base, "step": f"INT8 {par['quantizer']} -> INT8 + recipe on {r['backend']}",
                    "from_AP": par_ap, "to_AP": ap, "delta": round(ap - par_ap, 6),
                    "mode": r["mode"], "to_cell": r["cell"],
                    "from_cell": r["recipe_of"],
                    "recovered_share": round((ap - par_ap) / loss, 3) if loss > 0 else None,
                    "float_layers": r.get("recipe_float_layers"),
                    "speed_vs_int8": _num(r.get("speed_vs_parent")),
                    "speedup_vs_fp32": _num(r.get("speedup_vs_fp32")),
                    "int8_speedup_vs_fp32": _num(par.get("speedup_vs_fp32"))})
    return out


def _with_all_outputs(path: Path) -> tuple[Any, list[str]]:
    """The model with every float node output also a graph output, and those names in graph
    order."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in m.graph.value_info}
    existing = {o.name for o in m.graph.output}
    names = []
    for n in m.graph.node:
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o and types.get(o) == TensorProto.FLOAT:
                names.append(o)
                if o not in existing:
                    m.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))
    return m, names


def _dequantized(model: Any) -> dict[str, str]:
    """tensor -> the output of the DequantizeLinear that its QuantizeLinear feeds."""
    q_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {t: dq_of[q] for t, q in q_of.items() if q in dq_of}


def first_divergence(fp32: Path, int8: Path, feeds: list[dict[str, np.ndarray]],
                     min_cosine: float = 0.99) -> dict[str, Any]:
    """Run both graphs on ``feeds`` with every intermediate exposed; compare the tensors the two
    share by name in the FP32 graph's order; the first whose cosine falls below ``min_cosine``."""
    import onnxruntime as ort

    def session(model: Any) -> Any:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    m32, order = _with_all_outputs(fp32)
    m8, names8 = _with_all_outputs(int8)
    # what the INT8 graph's consumers read: a tensor followed by Q -> DQ is read as the DQ's
    # output (ORT's quantizer also drops a Relu after a Conv and lets Q clamp at zero)
    consumed = _dequantized(m8)
    as8 = {n: consumed.get(n, n) for n in order if consumed.get(n, n) in set(names8)}
    shared = list(as8)
    s32, s8 = session(m32), session(m8)
    dot = {n: 0.0 for n in shared}
    n32 = dict(dot)
    n8 = dict(dot)
    max_abs = dict(dot)
    binary = {n: True for n in shared}  # 0/1 masks (comparisons cast to float): not compared
    for f in feeds:
        a = dict(zip(shared, s32.run(shared, f), strict=True))
        b = dict(zip(shared, s8.run([as8[n] for n in shared], f), strict=True))
        for n in shared:
            x, y = a[n].astype(np.float64).ravel(), b[n].astype(np.float64).ravel()
            if x.shape != y.shape:
                continue
            binary[n] = binary[n] and bool(np.all((x == 0) | (x == 1)))
            dot[n] += float(x @ y)
            n32[n] += float(x @ x)
            n8[n] += float(y @ y)
            max_abs[n] = max(max_abs[n], float(np.abs(x - y).max()) if x.size else 0.0)
    producer = {o: (nd.name, nd.op_type) for nd in m32.graph.node for o in nd.output}
    compared = []
    for n in shared:
        if binary[n]:
            continue
        cos = dot[n] / math.sqrt(n32[n] * n8[n]) if n32[n] > 0 and n8[n] > 0 else 1.0
        compared.append({"tensor": n, "node": producer[n][0], "op_type": producer[n][1],
                         "cosine": round(cos, 6), "max_abs": round(max_abs[n], 6)})
    first = next((c for c in compared if c["cosine"] < min_cosine), None)
    return {"fp32": str(fp32), "int8": str(int8), "compared": len(compared), "min_cosine": min_cosine,
            "first": first, "worst": min(compared, key=lambda c: c["cosine"]) if compared else None}


def build_ledger(summary: Any, results: Path, specs: dict[str, Any], manifest: dict[str, Any],
                 images: int = 4, root: Path = Path(".")) -> dict[str, Any]:
    """The ledger, with the divergence check for the largest INT8 drop of each chain whose INT8
    graph is a measured Q/DQ ONNX."""
    from quantsweep.quantize.calibdata import calib_feeds, onnx_bindings
    from quantsweep.status import stage_status

    rows = steps(summary)
    divergence = {}
    by_chain: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["step"].startswith("ONNX FP32 -> INT8") and r["mode"] == "measured" \
                and r["to_cell"].split("/")[-1] not in ENGINE_BACKENDS:  # graphs ONNX Runtime runs
            by_chain.setdefault((r["model"], r["toolset"], r["opset"]), []).append(r)
    for (model, toolset, opset), rs in by_chain.items():
        worst = min(rs, key=lambda r: r["delta"])
        quantizer = worst["to_cell"].split("/")[3]
        axes = {"model": model, "toolset": toolset, "opset": opset, "quantizer": quantizer}
        q, e = stage_status(results, "quantize", **axes), stage_status(results, "export", **axes)
        if q is None or e is None:
            continue
        qa, ea = q.get("artifacts", {}), e.get("artifacts", {})
        int8 = root / qa.get("model", "")
        fp32 = root / (qa.get("float_model") or ea.get("model", ""))
        if not (int8.suffix == ".onnx" and fp32.suffix == ".onnx" and int8.exists() and fp32.exists()):
            continue
        try:
            feeds = calib_feeds(onnx_bindings(fp32), specs[model], manifest, images)
            d = first_divergence(fp32, int8, feeds)
        except Exception as exc:  # noqa: BLE001 - a graph the check cannot run: say so, keep the rest
            d = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        divergence[worst["to_cell"]] = {**d, "delta": worst["delta"]}
    return {"steps": rows, "divergence": divergence, "analysis": analyses(summary, results, root)}


def analyses(summary: Any, results: Path, root: Path = Path("."), top: int = 20) -> dict[str, Any]:
    """The per-layer sensitivity of each analysed quantized graph (its ``sensitivity.json``, the
    ``top`` layers), keyed by model/toolset/opsetN/quantizer."""
    from quantsweep.status import stage_status

    out: dict[str, Any] = {}
    if "analyze_status" not in summary:
        return out
    for _, r in summary[summary["analyze_status"] == "ok"].iterrows():
        if isinstance(r.get("recipe_of"), str):
            continue
        axes = {"model": r["model"], "toolset": r["toolset"], "opset": int(r["opset"]),
                "quantizer": r["quantizer"]}
        key = f"{r['model']}/{r['toolset']}/opset{int(r['opset'])}/{r['quantizer']}"
        an = stage_status(results, "analyze", **axes)
        if key in out or an is None or an["status"] != "ok":
            continue
        sens = json.loads((root / an["artifacts"]["sensitivity"]).read_text())
        recipe = json.loads((root / an["artifacts"]["recipe"]).read_text())
        out[key] = {"layers": [{k: x.get(k) for k in ("layer", "op", "error_only_quantized",
                                                        "error_recovered", "ap_drop", "ap_recovered")}
                               for x in sens["layers"][:top]],
                    "quantized_layers": len(sens["layers"]), "AP_fp32": sens["AP_fp32"],
                    "AP_int8": sens["AP_int8"], "val_images": sens["val_images"],
                    "recipe": {k: recipe[k] for k in ("float_layers", "AP_recipe", "target_met")},
                    "file": an["artifacts"]["sensitivity"]}
    return out


def main(argv: list[str]) -> int:
    import argparse

    import pandas as pd

    from quantsweep.status import write_json_atomic, write_text_atomic

    ap = argparse.ArgumentParser(prog="ledger")
    ap.add_argument("--summary", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--specs", required=True, help="JSON: model name -> spec (inputs, preprocess)")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True, help="ledger.json; ledger.csv is written beside it")
    a = ap.parse_args(argv)
    summary = pd.read_csv(a.summary)
    led = build_ledger(summary, Path(a.results), json.loads(a.specs),
                       json.loads(Path(a.manifest).read_text()))
    write_json_atomic(a.out, led)
    write_text_atomic(Path(a.out).with_suffix(".csv"), pd.DataFrame(led["steps"]).to_csv(index=False))
    print(f"{len(led['steps'])} steps; divergence checked for {len(led['divergence'])} INT8 graphs")
    return 0
