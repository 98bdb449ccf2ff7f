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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CommandError(ValueError):
    """The cell asks for something its TensorRT version cannot do; says what would."""


@dataclass
class Input:
    name: str
    dims: list[int | str | None]


@dataclass
class BuildRequest:
    onnx: Path
    precision: str  # fp32 | fp16 | int8
    trt_version: str
    engine: Path
    cache: Path | None = None  # implicit INT8 calibration cache
    qdq: bool = False  # the graph carries Q/DQ (explicit quantization)
    batch: tuple[int, int, int] = (1, 1, 1)  # min, opt, max of a dynamic batch axis
    dims: dict[str, list[int]] = field(default_factory=dict)  # sizes for other dynamic dims
    layer_precisions: dict[str, str] = field(default_factory=dict)  # fallback: layer -> fp16/fp32
    timing_cache: Path | None = None
    layer_info: Path | None = None
    profile: Path | None = None
    workspace_mib: int | None = None


def graph_inputs(onnx_path: Path) -> list[Input]:
    """The model's real inputs (initializers excluded), read from the graph."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims: list[int | str | None] = []
        for d in i.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out.append(Input(i.name, dims))
    return out


def major(version: str) -> int:
    return int(re.findall(r"\d+", version)[0])


def _shape(inp: Input, batch: int, sizes: dict[str, list[int]]) -> str:
    if inp.name in sizes:
        return "x".join(map(str, sizes[inp.name]))
    dims = []
    for k, d in enumerate(inp.dims):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif k == 0:
            dims.append(batch)
        else:
            raise CommandError(f"input {inp.name!r} has a dynamic dimension {k} ({d!r}) other than "
                               f"the batch: give its size (dims: {{{inp.name}: [...]}})")
    return "x".join(map(str, dims))


def shape_flags(inputs: list[Input], req: BuildRequest) -> list[str]:
    """--minShapes/--optShapes/--maxShapes for dynamic inputs, named as the graph names them."""
    unknown = sorted(set(req.dims) - {i.name for i in inputs})
    if unknown:
        raise CommandError(f"dims given for {unknown}, which are not inputs of {req.onnx}; its "
                           f"inputs are {[i.name for i in inputs]}")
    dynamic = [i for i in inputs if any(not (isinstance(d, int) and d > 0) for d in i.dims)]
    if not dynamic:
        return []
    flags = []
    for flag, b in zip(("--minShapes", "--optShapes", "--maxShapes"), req.batch, strict=True):
        flags.append(f"{flag}=" + ",".join(f"{i.name}:{_shape(i, b, req.dims)}" for i in dynamic))
    return flags


def command(req: BuildRequest, inputs: list[Input] | None = None, exe: str = "trtexec") -> list[str]:
    """The trtexec command line for ``req``; CommandError when the version cannot do it."""
    mj = major(req.trt_version)
    inputs = graph_inputs(req.onnx) if inputs is None else inputs
    cmd = [exe, f"--onnx={req.onnx}", f"--saveEngine={req.engine}"]
    cmd += shape_flags(inputs, req)
    if req.precision == "fp16":
        if mj >= 11:
            raise CommandError(f"TensorRT {req.trt_version} has no --fp16 (weak typing was removed "
                               f"in 11): export an FP16 graph and build it strongly typed")
        cmd.append("--fp16")
    elif req.precision == "int8":
        if req.qdq:
            # explicit quantization: 8.6 needs --int8 to enable INT8 kernels; 10+ take the
            # precisions from the graph
            cmd.append("--int8" if mj < 10 else "--stronglyTyped")
        elif req.cache is not None:
            if mj >= 11:
                raise CommandError(f"TensorRT {req.trt_version} has no implicit INT8 (--int8 "
                                   f"--calib were removed in 11): the calibration cache {req.cache} "
                                   f"cannot be used; apply it as Q/DQ and build strongly typed")
            cmd += ["--int8", f"--calib={req.cache}"]
        else:
            raise CommandError("INT8 needs a Q/DQ graph or a calibration cache (trtexec --int8 "
                               "without either calibrates with random data)")
    elif req.precision != "fp32":
        raise CommandError(f"unknown precision {req.precision!r}")
    if req.layer_precisions:
        if "--stronglyTyped" in cmd or mj >= 11:
            raise CommandError("per-layer precisions cannot be set on a strongly typed network")
        cmd += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(
            f"{k}:{v}" for k, v in req.layer_precisions.items())]
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
    for line in text.splitlines():
        if not re.search(r"\[(E|F)\]|ERROR|Error", line):
            continue
        for cls, pat, meaning in ERROR_CLASSES:
            m = pat.search(line)
            if m:
                detail = next((g for g in reversed(m.groups()) if g), m.group(0))
                out["errors"].append({"class": cls, "detail": detail.strip(), "line": line.strip(),
                                      "meaning": meaning})
                break
    if re.search(r"&&&& FAILED TensorRT\.trtexec", text) and not out["errors"]:
        last = [ln for ln in text.splitlines() if "[E]" in ln]
        out["errors"].append({"class": "trtexec_failed", "detail": last[-1].strip() if last else "",
                              "line": last[-1].strip() if last else "", "meaning": "trtexec failed"})
    out["passed"] = bool(re.search(r"&&&& PASSED TensorRT\.trtexec", text)) and not out["errors"]
    return out
