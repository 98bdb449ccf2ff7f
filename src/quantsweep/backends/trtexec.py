"""The ``trtexec`` backend: the command line for a cell, valid for its TensorRT major version,
with the model's real input names; and the parser of trtexec's log (performance summary and
classified errors). trtexec itself is run only where it is on PATH.

Flags by major version (from each version's ``trtexec --help``):
- 8.6: ``--fp16``, ``--int8`` (+ ``--calib=<cache>`` for implicit INT8, or a QDQ graph),
  ``--precisionConstraints/--layerPrecisions``, ``--memPoolSize=workspace:<MiB>``.
- 10.x: as 8.6, plus ``--stronglyTyped`` (used for QDQ graphs: precisions come from the graph).
- 11.x: implicit quantization is gone: no ``--int8``, ``--fp16``, ``--calib``, ``--best``;
  precisions come only from the graph (``--stronglyTyped``).
"""

from __future__ import annotations

import re
from typing import Any

from quantsweep.backends.tensorrt_plan import (  # noqa: F401  (re-exported)
    BuildRequest,
    CommandError,
    Input,
    graph_inputs,
    major,
    plan,
    profile_shapes,
)


def shape_flags(inputs: list[Input], req: BuildRequest) -> list[str]:
    """--minShapes/--optShapes/--maxShapes for dynamic inputs, named as the graph names them."""
    shapes = profile_shapes(inputs, req)
    if not shapes:
        return []
    return [f"{flag}=" + ",".join(f"{name}:{'x'.join(map(str, s[k]))}" for name, s in shapes.items())
            for k, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes"))]


def command(req: BuildRequest, inputs: list[Input] | None = None, exe: str = "trtexec") -> list[str]:
    """The trtexec command line for ``req``; CommandError when the version cannot do it."""
    p = plan(req)
    inputs = graph_inputs(req.onnx) if inputs is None else inputs
    cmd = [exe, f"--onnx={req.onnx}", f"--saveEngine={req.engine}"]
    cmd += shape_flags(inputs, req)
    if p.fp16:
        cmd.append("--fp16")
    if p.int8:
        cmd.append("--int8")
    if p.calib_cache is not None:
        cmd.append(f"--calib={p.calib_cache}")
    if p.strongly_typed:
        cmd.append("--stronglyTyped")
    if p.layer_precisions:
        cmd += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(
            f"{k}:{v}" for k, v in p.layer_precisions.items())]
    if req.workspace_mib:
        cmd.append(f"--memPoolSize=workspace:{req.workspace_mib}")
    if req.timing_cache:
        cmd.append(f"--timingCacheFile={req.timing_cache}")
    if req.layer_info or req.profile:
        cmd.append("--profilingVerbosity=detailed")
    if req.layer_info:
        cmd.append(f"--exportLayerInfo={req.layer_info}")
    if req.profile:
        cmd.append(f"--exportProfile={req.profile}")
    return cmd


# ---- the log ---------------------------------------------------------------------------

_STAT = r"min = ([\d.e+-]+) ms, max = ([\d.e+-]+) ms, mean = ([\d.e+-]+) ms, median = ([\d.e+-]+) ms"
_PCT = r"percentile\((\d+)%\) = ([\d.e+-]+) ms"
_SUMMARY = {"Latency": "latency", "GPU Compute Time": "gpu_compute", "H2D Latency": "h2d",
            "D2H Latency": "d2h", "Enqueue Time": "enqueue"}

# (class, pattern, what it means); the first match in the log's order wins
ERROR_CLASSES: list[tuple[str, re.Pattern[str], str]] = [
    ("engine_version_mismatch", re.compile(
        r"(not compatible with this version of TensorRT.*|Version tag does not match.*)"),
     "the engine was built by another TensorRT version: rebuild it with this one"),
    ("input_name_mismatch", re.compile(r"Cannot find input tensor with name \"?([^\"\s]+)\"?"),
     "a --shapes/--minShapes name is not an input of the model: use the graph's input names"),
    ("unsupported_op", re.compile(
        r"(No importer registered for op: (\w+)|getPluginCreator could not find plugin:? (\w+))"),
     "the ONNX parser has no converter for this op in this TensorRT version"),
    ("no_implementation", re.compile(r"Could not find any implementation for node (.+)\.\)?\s*$"),
     "no kernel for this (fused) node at the requested precision: fall back to FP16 for it, or "
     "use a TensorRT version that has one"),
    ("calibration_failed", re.compile(
        r"(Calibration failure occurred with no scaling factors detected.*|"
        r"is bound to nullptr.*)"),
     "the calibration cache was rejected or ignored and TensorRT tried to calibrate without "
     "data: the cache's header must match this TensorRT version"),
    ("out_of_memory", re.compile(r"(out of memory|OutOfMemory|could not be allocated)", re.I),
     "the GPU ran out of memory: a smaller workspace, batch or max shape"),
    ("parse_failed", re.compile(r"(Failed to parse onnx file|Failed to parse ONNX model)"),
     "the ONNX parser rejected the model"),
]


def fused_layers(node: str) -> list[str]:
    """The layers a TensorRT node name fuses: ``A + PWN(PWN(B), C)`` -> [A, B, C]."""
    cleaned = re.sub(r"\b[A-Za-z]+\(", "(", node)  # PWN( / ForeignNode( wrappers
    return [t for t in re.findall(r"[^\s,()+]+", cleaned) if t]


def classify_errors(lines: list[str]) -> list[dict[str, str]]:
    """The error lines of a TensorRT log (trtexec's, or the builder's logger) that match a known
    class, in the log's order."""
    errors = []
    for line in lines:
        if not re.search(r"\[(E|F)\]|ERROR|Error", line):
            continue
        for cls, pat, meaning in ERROR_CLASSES:
            m = pat.search(line)
            if m:
                detail = next((g for g in reversed(m.groups()) if g), m.group(0))
                errors.append({"class": cls, "detail": detail.strip(), "line": line.strip(),
                               "meaning": meaning})
                break
    return errors


def parse_log(text: str) -> dict[str, Any]:
    """Metrics of trtexec's performance summary, the versions it names, and the errors."""
    out: dict[str, Any] = {"metrics": {}, "errors": []}
    if m := re.search(r"TensorRT\.trtexec \[TensorRT v(\d+)\]", text):
        out["tensorrt_code"] = m.group(1)
    if m := re.search(r"TensorRT version: ([\d.]+)", text):
        out["tensorrt_version"] = m.group(1)
    if m := re.search(r"Selected Device: (.+)", text):
        out["gpu"] = m.group(1).strip()
    metrics: dict[str, float] = out["metrics"]
    if m := re.search(r"Throughput: ([\d.e+-]+) qps", text):
        metrics["throughput_qps"] = float(m.group(1))
    if m := re.search(r"Engine built in ([\d.]+) sec", text):
        metrics["build_s"] = float(m.group(1))
    for line in text.splitlines():
        for label, key in _SUMMARY.items():
            m = re.search(rf"\] \[I\] {label}: {_STAT}", line)
            if m:
                for name, v in zip(("min", "max", "mean", "median"), m.groups(), strict=True):
                    metrics[f"{key}_{name}_ms"] = float(v)
                for pct, v in re.findall(_PCT, line):
                    metrics[f"{key}_p{pct}_ms"] = float(v)
    out["errors"] = classify_errors(text.splitlines())
    if re.search(r"&&&& FAILED TensorRT\.trtexec", text) and not out["errors"]:
        last = [ln for ln in text.splitlines() if "[E]" in ln]
        out["errors"].append({"class": "trtexec_failed", "detail": last[-1].strip() if last else "",
                              "line": last[-1].strip() if last else "", "meaning": "trtexec failed"})
    out["passed"] = bool(re.search(r"&&&& PASSED TensorRT\.trtexec", text)) and not out["errors"]
    return out
