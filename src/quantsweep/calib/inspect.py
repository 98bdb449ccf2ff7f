"""``quantsweep cache inspect``: what a calibration cache holds, which TensorRT versions will use
or silently ignore it, and what is wrong with it against the ONNX graph it is meant for."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from quantsweep.calib import Cache, bad_scale, compatibility, read
from quantsweep.qdq_graph import COMPUTE_OPS

# TensorRT versions of the default sweep's toolsets
DEFAULT_TRT_VERSIONS = ("8.6.1", "10.13.3", "11.4.0")
# ops whose activations TensorRT runs in INT8 under implicit quantization: their non-constant
# inputs need a scale (a missing one makes the layer fall back to higher precision)
INT8_OPS = COMPUTE_OPS
OUTLIER_FACTOR = 1000.0


def _finding(severity: str, code: str, message: str, **evidence: Any) -> dict[str, Any]:
    return {"severity": severity, "code": code, "message": message, **evidence}


def graph_tensors(onnx_path: str | Path) -> tuple[set[str], set[str], set[str]]:
    """(all tensor names, initializer names, activations feeding INT8-capable ops)."""
    import onnx

    from quantsweep.qdq_graph import constants

    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    consts = constants(g)
    names = {i.name for i in g.input} | {o.name for o in g.output} | consts
    for n in g.node:
        names.update(x for x in n.input if x)
        names.update(x for x in n.output if x)
    need = {x for n in g.node if n.op_type in INT8_OPS for x in n.input[:1]
            if x and x not in consts}
    return names, consts, need


def inspect_cache(cache: Cache, onnx_path: str | Path | None = None,
                  trt_versions: tuple[str, ...] = DEFAULT_TRT_VERSIONS) -> dict[str, Any]:
    findings: list[dict[str, Any]] = []
    for name, scale in cache.scales.items():
        why = bad_scale(scale)
        if why:
            findings.append(_finding("error", "bad_scale", f"tensor {name!r} has a {why} scale "
                                     f"({scale!r}); TensorRT cannot quantize it", tensor=name,
                                     value=scale))
    good = [s for s in cache.scales.values() if bad_scale(s) is None]
    if len(good) >= 4:
        med = statistics.median(good)
        for name, scale in cache.scales.items():
            if bad_scale(scale) is None and scale > OUTLIER_FACTOR * med:
                findings.append(_finding("warning", "outlier_scale",
                                         f"tensor {name!r}: scale {scale:.4g} is over "
                                         f"{OUTLIER_FACTOR:.0f}x the median {med:.4g}",
                                         tensor=name, value=scale))
    graph: dict[str, Any] = {}
    if onnx_path is not None:
        names, constants, need = graph_tensors(onnx_path)
        unknown = [n for n in cache.scales if n not in names]
        if cache.scales and len(unknown) == len(cache.scales):
            findings.append(_finding("error", "no_tensor_matches",
                                     f"none of the {len(unknown)} names in the cache is a tensor "
                                     f"of {onnx_path}: a cache for another graph or another export",
                                     tensor=unknown[0]))
        else:  # unused entries: TensorRT looks scales up by name and never reads these
            for n in unknown:
                findings.append(_finding("warning", "unknown_tensor", f"{n!r} is not a tensor of "
                                         f"{onnx_path}: the entry is never used", tensor=n))
        on_consts = [n for n in cache.scales if n in constants]
        for n in on_consts:
            findings.append(_finding("info", "constant_tensor", f"{n!r} is a weight or constant: "
                                     f"TensorRT computes weight scales itself", tensor=n))
        missing = sorted(need - set(cache.scales))
        for n in missing:
            findings.append(_finding("warning", "missing_scale", f"{n!r} feeds a "
                                     f"{'/'.join(INT8_OPS)} layer but has no scale: that layer "
                                     f"falls back to higher precision", tensor=n))
        graph = {"onnx": str(onnx_path), "tensors": len(names), "need_scale": len(need),
                 "covered": len(need & set(cache.scales)), "unknown": len(unknown)}
    compat = [{"tensorrt": v, "verdict": verdict, "why": why}
              for v in trt_versions for verdict, why in [compatibility(cache, v)]]
    return {"header": cache.header, "version": cache.version, "algorithm": cache.algorithm,
            "trailing_space": cache.trailing_space, "tensors": len(cache.scales),
            "graph": graph, "compatibility": compat, "findings": findings,
            "errors": sum(f["severity"] == "error" for f in findings)}


def format_report(path: str | Path, rep: dict[str, Any]) -> str:
    lines = [f"{path}: header {rep['header']!r} (TensorRT version field {rep['version']}, "
             f"algorithm {rep['algorithm']}), {rep['tensors']} tensors"]
    if rep["trailing_space"]:
        lines.append("  note: the header ends with a space (as paddle2onnx 1.3.1 writes it)")
    if rep["graph"]:
        g = rep["graph"]
        lines.append(f"  against {g['onnx']}: {g['covered']}/{g['need_scale']} INT8-layer inputs "
                     f"have a scale; {g['unknown']} cache names are not in the graph")
    lines.append("  TensorRT versions:")
    for c in rep["compatibility"]:
        lines.append(f"    {c['tensorrt']:>8s}: {c['verdict']:9s} {c['why']}")
    by_code: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in rep["findings"]:
        by_code.setdefault((f["severity"], f["code"]), []).append(f)
    for (sev, code), fs in sorted(by_code.items(), key=lambda kv: ("error", "warning", "info").index(kv[0][0])):
        lines.append(f"  {sev.upper()} {code} ({len(fs)}):")
        for f in fs[:10]:
            lines.append(f"    {f['message']}")
        if len(fs) > 10:
            lines.append(f"    ... and {len(fs) - 10} more")
    lines.append(f"  {rep['errors']} error(s)")
    return "\n".join(lines)


def main(path: str, onnx_path: str | None, trt_versions: list[str] | None, as_json: bool) -> int:
    import json

    from quantsweep.calib import CacheError

    try:
        cache = read(path)
    except CacheError as exc:
        print(f"error: {exc}")
        return 2
    if onnx_path is not None and not Path(onnx_path).is_file():
        print(f"error: {onnx_path}: no such ONNX file")
        return 2
    rep = inspect_cache(cache, onnx_path, tuple(trt_versions or DEFAULT_TRT_VERSIONS))
    print(json.dumps(rep, indent=1) if as_json else format_report(path, rep))
    return 1 if rep["errors"] else 0
