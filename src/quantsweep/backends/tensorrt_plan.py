"""What a TensorRT build of a cell means for its TensorRT major version: one set of rules that
both the ``trtexec`` command line and the ``tensorrt_api`` builder follow.

- 8.6: weak typing (``FP16``/``INT8`` builder flags); INT8 either implicit (a calibration cache)
  or explicit (a Q/DQ graph, which still needs the ``INT8`` flag); explicit-batch networks.
- 10.x: networks are always explicit batch; Q/DQ graphs are built strongly typed (precisions
  come from the graph); implicit INT8 with a cache and FP16 flags still work (deprecated).
- 11.x: weak typing is gone (no ``FP16``/``INT8`` flags, no calibrators, no ``--calib``): only
  strongly typed networks, so FP16 needs an FP16 graph and INT8 a Q/DQ graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass(frozen=True)
class Plan:
    """The builder settings ``plan`` derived from a request."""

    major: int
    fp16: bool  # the FP16 builder flag (weak typing)
    int8: bool  # the INT8 builder flag (weak typing)
    strongly_typed: bool
    calib_cache: Path | None  # implicit INT8: the cache a calibrator hands to the builder
    layer_precisions: dict[str, str]


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


def plan(req: BuildRequest) -> Plan:
    """The settings for ``req`` under its TensorRT version; CommandError when it cannot be done."""
    mj = major(req.trt_version)
    fp16 = int8 = strongly = False
    cache = None
    if req.precision == "fp16":
        if mj >= 11:
            raise CommandError(f"TensorRT {req.trt_version} has no --fp16 / FP16 builder flag (weak "
                               f"typing was removed in 11): export an FP16 graph and build it strongly typed")
        fp16 = True
    elif req.precision == "int8":
        if req.qdq:
            # explicit quantization: 8.6 needs the INT8 flag to enable INT8 kernels; 10+ take
            # the precisions from the graph
            int8, strongly = mj < 10, mj >= 10
        elif req.cache is not None:
            if mj >= 11:
                raise CommandError(f"TensorRT {req.trt_version} has no implicit INT8 (--int8 --calib, the "
                                   f"INT8 flag and calibrators were removed in 11): the calibration cache "
                                   f"{req.cache} cannot be used; apply it as Q/DQ and build strongly "
                                   f"typed")
            int8, cache = True, req.cache
        else:
            raise CommandError("INT8 needs a Q/DQ graph or a calibration cache (INT8 without either "
                               "calibrates with random data)")
    elif req.precision != "fp32":
        raise CommandError(f"unknown precision {req.precision!r}")
    if req.layer_precisions:
        if strongly or mj >= 11:
            raise CommandError("per-layer precisions cannot be set on a strongly typed network")
        bad = {k: v for k, v in req.layer_precisions.items() if v not in ("fp16", "fp32")}
        if bad:
            raise CommandError(f"layer precisions must be fp16 or fp32, got {bad}")
    return Plan(mj, fp16, int8, strongly, cache, dict(req.layer_precisions))


def profile_shapes(inputs: list[Input], req: BuildRequest) -> dict[str, tuple[list[int], ...]]:
    """(min, opt, max) shapes of each dynamic input, named as the graph names them."""
    unknown = sorted(set(req.dims) - {i.name for i in inputs})
    if unknown:
        raise CommandError(f"dims given for {unknown}, which are not inputs of {req.onnx}; its "
                           f"inputs are {[i.name for i in inputs]}")
    out = {}
    for inp in inputs:
        if all(isinstance(d, int) and d > 0 for d in inp.dims):
            continue
        out[inp.name] = tuple(_shape(inp, b, req.dims) for b in req.batch)
    return out


def _shape(inp: Input, batch: int, sizes: dict[str, list[int]]) -> list[int]:
    if inp.name in sizes:
        return list(sizes[inp.name])
    dims = []
    for k, d in enumerate(inp.dims):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif k == 0:
            dims.append(batch)
        else:
            raise CommandError(f"input {inp.name!r} has a dynamic dimension {k} ({d!r}) other than "
                               f"the batch: give its size (dims: {{{inp.name}: [...]}})")
    return dims
