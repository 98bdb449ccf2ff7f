"""Build stage: turn the (quantized) ONNX model into what the cell's backend runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.job import Job, Result, Skip, ToolFailure, tool_call

if TYPE_CHECKING:
    from quantsweep.backends.tensorrt_plan import BuildRequest


def run(job: Job) -> Result:
    p = job.params
    backend, precision = p["backend"], p["precision"]
    model = job.artifact("quantize", "model")
    int8_model = bool(job.inputs["quantize"]["data"].get("int8"))
    t0 = time.monotonic()
    if backend == "onnxruntime":
        if (precision == "int8") != int8_model:
            raise Skip("precision_mismatch",
                       f"onnxruntime runs the graph it is given: precision {precision} needs "
                       + ("a quantized (QDQ) model; quantizer none gives a float graph"
                          if precision == "int8" else "a float model; this one is quantized"))
        from quantsweep.backends import onnxruntime as ortb

        ok, why = ortb.available()
        if not ok:
            raise ToolFailure("tool_missing", why)
        if precision == "fp16":
            raise Skip("unsupported_precision",
                       "onnxruntime CPU has no fp16 kernels for most ops; fp16 is a TensorRT cell")
        with tool_call("session_create", f"onnxruntime rejected {model}"):
            info = ortb.build(model, precision, None, job.out_dir, p.get("backend_options", {}))
        return Result(backend="onnxruntime", artifacts={"model": str(model)},
                      data={**info, "build_s": round(time.monotonic() - t0, 3)})
    if backend == "tensorrt_sim":
        return simulate_tensorrt(job, precision)
    if backend == "paddle_inference":
        return paddle_inference_build(job, precision, int8_model)
    if backend == "paddle_tensorrt":
        return paddle_tensorrt_build(job, precision, int8_model)
    if backend in ("tensorrt_api", "trtexec"):
        return tensorrt_build(job, backend, precision)
    raise Skip("not_implemented", f"backend {backend!r} is not implemented in this quantsweep version")


def tensorrt_graph(q: dict[str, Any], precision: str,
                   opts: dict[str, Any]) -> tuple[Path, Path | None, bool]:
    """(graph, cache, qdq) that a TensorRT build of ``precision`` takes from the cell's quantize
    record: a Q/DQ graph (explicit INT8); or, with ``tensorrt.int8: implicit`` or a quantizer
    that calibrates implicitly (trt-calibrator), the float graph plus its calibration cache
    (TensorRT <= 10). Skip when the graph does not fit the precision."""
    int8_model = bool(q["data"].get("int8"))
    implicit = precision == "int8" and (opts.get("int8", "explicit") == "implicit"
                                        or q["data"].get("calibration") == "implicit")
    if implicit:
        cache = q["artifacts"].get("calibration_cache")
        if not cache:
            raise Skip("no_cache", f"tensorrt.int8 is implicit but quantizer "
                                   f"{q['data'].get('quantizer')!r} leaves no calibration cache")
        return Path(q["artifacts"]["float_model"]), Path(cache), False
    if (precision == "int8") != int8_model:
        raise Skip("precision_mismatch",
                   f"TensorRT {precision} of this {'quantized' if int8_model else 'float'} graph: "
                   + ("INT8 needs a Q/DQ graph (a quantizer), or tensorrt.int8: implicit with a "
                      "calibration cache" if precision == "int8" else
                      "a Q/DQ graph builds as INT8 only"))
    return Path(q["artifacts"]["model"]), None, int8_model


def tensorrt_build_request(onnx: Path, precision: str, trt_version: str, out: Path,
                           opts: dict[str, Any], cache: Path | None, qdq: bool) -> BuildRequest:
    """The build of ``onnx`` with its outputs (engine, timing cache, layer info, profile) in
    ``out`` and the ``tensorrt`` config's profile, layer precisions and workspace."""
    from quantsweep.backends.tensorrt_plan import BuildRequest

    return BuildRequest(onnx=onnx, precision=precision, trt_version=trt_version,
                        engine=out / "model.engine", cache=cache, qdq=qdq,
                        batch=tuple(opts.get("batch", (1, 1, 1))),  # type: ignore[arg-type]
                        dims=dict(opts.get("dims", {})),
                        layer_precisions=dict(opts.get("layer_precisions", {})),
                        timing_cache=out / "timing.cache", layer_info=out / "layers.json",
                        profile=out / "profile.json", workspace_mib=opts.get("workspace_mib"))


def tensorrt_request(job: Job, precision: str, trt_version: str) -> BuildRequest:
    """The cell's TensorRT build (``tensorrt_graph``); an implicit-INT8 cache is checked
    against the graph first."""
    opts = job.params.get("tensorrt", {})
    q = job.inputs["quantize"]
    onnx, cache, qdq = tensorrt_graph(q, precision, opts)
    if cache is not None:
        _check_cache(cache, onnx, trt_version)
        # a recipe cell built from the float graph + cache: its float layers as layer precisions
        # (an explicit build takes the recipe's Q/DQ graph, where those layers have no Q/DQ)
        recipe = {n: "fp16" for n in q["data"].get("nodes_to_exclude") or ()}
        opts = {**opts, "layer_precisions": {**recipe, **opts.get("layer_precisions", {})}}
    return tensorrt_build_request(onnx, precision, trt_version, job.out_dir, opts, cache, qdq)


def _check_cache(cache_path: Path, onnx: Path, trt_version: str) -> None:
    """A cache with errors against the graph (zero/NaN scales; names of another graph) fails
    the row before TensorRT would quietly build a different engine from it."""
    from quantsweep import calib
    from quantsweep.calib.inspect import inspect_cache

    try:
        cache = calib.read(cache_path)
    except calib.CacheError as exc:
        raise ToolFailure("invalid_cache", str(exc)) from None
    errors = [f for f in inspect_cache(cache, onnx, (trt_version,))["findings"]
              if f["severity"] == "error"]
    if errors:
        raise ToolFailure("invalid_cache", f"{cache_path}: {errors[0]['message']}"
                          + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""))


FALLBACK_CLASSES = ("no_implementation",)


def tensorrt_build(job: Job, backend: str, precision: str) -> Result:
    """A TensorRT engine for the cell. An INT8 build that fails with a class the fallback policy
    covers (``tensorrt.fallback``) stays a failed row; the fallback build is recorded in it
    (``data.fallback``) and becomes its own linked row in the summary."""
    from quantsweep.backends import tensorrt_api

    ok, version = tensorrt_api.available()
    exe = None
    if backend == "trtexec":
        exe = shutil.which("trtexec")
        if not exe:
            raise Skip("missing_requirement", "trtexec is not on PATH (TensorRT is not installed)")
        version = version if ok else str(job.params.get("tensorrt", {}).get("version") or "")
        if not version:
            raise Skip("missing_requirement", "trtexec is on PATH but its TensorRT version is unknown: "
                                              "install the tensorrt Python package in the toolset "
                                              "or set tensorrt.version")
    elif not ok:
        raise Skip("missing_requirement", version)
    req = tensorrt_request(job, precision, version)
    try:
        return _tensorrt_once(job, backend, req, exe)
    except ToolFailure as exc:
        policy = job.params.get("tensorrt", {}).get("fallback", "none")
        if precision != "int8" or policy == "none" or exc.reason_class not in FALLBACK_CLASSES:
            raise
        fb = _fallback(job, backend, req, exe, policy, exc)
        return Result(status="failed", reason_class=exc.reason_class,
                      message=f"{exc.message}; fallback {policy}: {fb['status']}"
                              + (f" ({fb['reason_class']})" if fb["status"] != "ok" else ""),
                      mode="skipped", backend=backend, data={"fallback": fb})


def _tensorrt_once(job: Job, backend: str, req: BuildRequest, exe: str | None) -> Result:
    from quantsweep.backends import tensorrt_api

    if exe is not None:
        return trtexec_build(job, req, exe)
    log = req.engine.parent / "build.log"
    info = tensorrt_api.build(req, log)
    return Result(backend="tensorrt_api", device="cuda",
                  artifacts={"model": str(req.engine), "build_log": str(log),
                             "layer_info": str(req.layer_info)}, data=info)


def _fallback(job: Job, backend: str, req: BuildRequest, exe: str | None, policy: str,
              exc: ToolFailure) -> dict[str, object]:
    """``fp16-layers``: the failing layer in FP16, the rest as before; ``fp16``: the whole
    engine FP16 from the float graph."""
    import dataclasses

    out = job.out_dir / "fallback"
    out.mkdir(exist_ok=True)
    where: dict[str, Any] = {"engine": out / "model.engine", "timing_cache": out / "timing.cache",
             "layer_info": out / "layers.json", "profile": out / "profile.json"}
    if policy == "fp16-layers":
        if not exc.detail:
            return {"policy": policy, "status": "failed", "reason_class": "no_layer_named",
                    "message": "the error names no layer to run in FP16"}
        from quantsweep.backends.trtexec import fused_layers

        layers = {name: "fp16" for name in fused_layers(exc.detail)}
        fb = dataclasses.replace(req, layer_precisions={**req.layer_precisions, **layers}, **where)
    else:
        q = job.inputs["quantize"]["artifacts"]
        fb = dataclasses.replace(req, precision="fp16", qdq=False, cache=None,
                                 onnx=Path(q.get("float_model") or q["model"]), **where)
    rec: dict[str, object] = {"policy": policy, "after": exc.reason_class, "onnx": str(fb.onnx),
                              "layer_precisions": fb.layer_precisions, "precision": fb.precision}
    t0 = time.monotonic()
    try:
        res = _tensorrt_once(job, backend, fb, exe)
    except ToolFailure as err:
        return {**rec, "status": "failed", "reason_class": err.reason_class, "message": err.message}
    except Exception as err:  # noqa: BLE001 - e.g. the version refuses layer precisions
        return {**rec, "status": "failed", "reason_class": "fallback_refused", "message": str(err)}
    return {**rec, "status": "ok", "device": res.device, "artifacts": res.artifacts,
            "data": res.data, "build_s": round(time.monotonic() - t0, 3)}


def trtexec_build(job: Job, req: BuildRequest, exe: str) -> Result:
    """Runs trtexec for the cell; its log becomes the row's metrics or its classified error."""
    import subprocess

    from quantsweep.backends import trtexec
    from quantsweep.job import describe_exit

    try:
        cmd = trtexec.command(req, exe=exe)
    except trtexec.CommandError as exc:
        raise ToolFailure("unsupported_precision", str(exc)) from None
    log = job.out_dir / "trtexec.log"
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    text = log.read_text(errors="replace")
    parsed = trtexec.parse_log(text)
    data = {"command": cmd, "build_s": round(time.monotonic() - t0, 3), **parsed}
    if parsed["errors"]:
        e = parsed["errors"][0]
        raise ToolFailure(e["class"], f"trtexec: {e['detail']} ({e['meaning']}); log {log}", e["detail"])
    if proc.returncode != 0 or not parsed["passed"]:
        cls, msg = describe_exit(proc.returncode, text, "trtexec")
        raise ToolFailure(cls, f"{msg}; log {log}")
    return Result(backend="trtexec", device=parsed.get("gpu", "cuda"),
                  artifacts={"model": str(req.engine), "trtexec_log": str(log),
                             "layer_info": str(req.layer_info)}, data=data)


def simulate_tensorrt(job: Job, precision: str) -> Result:
    """TensorRT INT8 estimated on the CPU: the quantizer's calibration cache applied to the
    float graph as Q/DQ (``quantsweep.calib.qdq``), run later by ONNX Runtime. The row says
    ``mode: simulated``; a cache the simulated TensorRT would ignore fails the row."""
    from quantsweep import calib
    from quantsweep.calib.inspect import DEFAULT_TRT_VERSIONS

    sim = job.params["simulate"]
    trt = sim["tensorrt_version"]
    if precision != "int8":
        raise Skip("not_simulated", f"only TensorRT INT8 is simulated on the CPU; {precision} "
                                    f"needs a GPU with TensorRT")
    q = job.inputs["quantize"]
    cache_path = q["artifacts"].get("calibration_cache")
    if not cache_path:
        raise Skip("no_cache", f"quantizer {q['data'].get('quantizer')!r} leaves no calibration "
                               f"cache: nothing to simulate TensorRT INT8 with")
    try:
        cache = calib.read(cache_path)
    except calib.CacheError as exc:
        raise ToolFailure("invalid_cache", str(exc)) from None
    verdicts = {v: calib.compatibility(cache, v) for v in dict.fromkeys((trt, *DEFAULT_TRT_VERSIONS))}
    verdict, why = verdicts[trt]
    if verdict == "ignored":
        raise ToolFailure("cache_ignored", f"{cache_path}: TensorRT {trt} would not use this "
                                           f"cache: {why}")
    from quantsweep.calib.qdq import apply_cache

    dst = job.out_dir / "model.onnx"
    t0 = time.monotonic()
    with tool_call("simulation_failed", f"applying {cache_path} as Q/DQ"):
        # a recipe cell's layers stay in float, as TensorRT builds them at the recipe's precision
        info = apply_cache(Path(q["artifacts"]["float_model"]), cache, dst, tuple(sim["op_types"]),
                           tuple(q["data"].get("nodes_to_exclude") or ()))
    return Result(mode="simulated", backend="tensorrt(sim)", artifacts={"model": str(dst)},
                  data={**info, "simulated_tensorrt": trt, "cache": str(cache_path),
                        "cache_header": cache.header,
                        "cache_verdicts": {v: {"verdict": a, "why": b} for v, (a, b) in verdicts.items()},
                        "build_s": round(time.monotonic() - t0, 3)})


def _paddle_model(job: Job, backend: str) -> str:
    q = job.inputs["quantize"]
    model_dir = q["artifacts"].get("paddle_model")
    if not model_dir:
        raise Skip("not_applicable", f"{backend} runs Paddle models; quantizer "
                                     f"{q['data'].get('quantizer')!r} of this cell leaves none")
    return str(model_dir)


def paddle_inference_build(job: Job, precision: str, int8_model: bool) -> Result:
    """Paddle Inference runs the Paddle model itself (the framework's, or PaddleSlim's quantized
    one), here on the CPU. Paddle-TRT INT8 needs a GPU build of Paddle with TensorRT."""
    from quantsweep.backends import paddle_inference

    model_dir = _paddle_model(job, "paddle_inference")
    if precision == "fp16" or (precision == "int8") != int8_model:
        raise Skip("precision_mismatch", f"Paddle Inference on the CPU runs the model it is given: "
                                         f"precision {precision} does not match this "
                                         f"{'quantized' if int8_model else 'float'} model")
    ok, why = paddle_inference.available()
    if not ok:
        raise ToolFailure("tool_missing", why)
    data: dict[str, object] = {"model_dir": model_dir, "device": "cpu"}
    if int8_model:
        # field report 000: a quantized model in a float configuration; on the CPU Paddle runs
        # its quantize/dequantize ops in float, which is what this row measures
        data["note"] = ("a quantized Paddle model in Paddle Inference's CPU (float) configuration: "
                        "its Q/DQ ops run in float; Paddle-TRT INT8 needs a GPU build")
    return Result(backend="paddle_inference", artifacts={"model": str(model_dir)}, data=data)


def paddle_tensorrt_build(job: Job, precision: str, int8_model: bool) -> Result:
    """Paddle-TRT (field report 000: the configuration that runs a PaddleSlim-quantized model in
    INT8): settings checked here, the TensorRT engine built by Paddle when evaluation starts."""
    from quantsweep.backends import paddle_inference
    from quantsweep.backends.tensorrt_plan import BuildRequest, Input, profile_shapes

    model_dir = _paddle_model(job, "paddle_tensorrt")
    if (precision == "int8") != int8_model:
        raise Skip("precision_mismatch", f"Paddle-TRT {precision} of this "
                                         f"{'quantized' if int8_model else 'float'} model: INT8 runs "
                                         f"quantized models (calibration mode off), FP32/FP16 float ones")
    ok, why = paddle_inference.tensorrt_available()
    if not ok:
        raise Skip("missing_requirement", why)
    opts = job.params.get("tensorrt", {})
    with tool_call("session_create", f"Paddle Inference could not load {model_dir}"):
        probe = paddle_inference.Runner(model_dir, {"threads": 1})
    inputs = [Input(b.name, [d if isinstance(d, int) and d > 0 else None for d in b.shape])
              for b in probe.inputs]
    req = BuildRequest(onnx=Path(model_dir), precision=precision, trt_version=why,
                       engine=job.out_dir, batch=tuple(opts.get("batch", (1, 1, 1))),  # type: ignore[arg-type]
                       dims=dict(opts.get("dims", {})))
    try:
        shapes = profile_shapes(inputs, req)
    except Exception as exc:  # noqa: BLE001 - CommandError: a dynamic dim without a size
        raise ToolFailure("invalid_config", str(exc)) from None
    trt = {"precision": precision, "quantized": int8_model, "shapes": shapes,
           "workspace_mib": opts.get("workspace_mib") or 1024}
    return Result(backend="paddle_tensorrt", device="cuda", artifacts={"model": str(model_dir)},
                  data={"paddle_tensorrt": trt, "tensorrt": why})

