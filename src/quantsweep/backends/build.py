"""Build stage: turn the (quantized) ONNX model into what the cell's backend runs."""

from __future__ import annotations

import shutil
import time

from quantsweep.job import Job, Result, Skip, ToolFailure, tool_call


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
    if backend == "trtexec" and not shutil.which("trtexec"):
        raise Skip("missing_requirement", "trtexec is not on PATH (TensorRT is not installed)")
    if backend in ("tensorrt_api", "trtexec"):
        try:
            import tensorrt
        except ImportError:
            raise Skip("missing_requirement",
                       "TensorRT is not importable in this toolset (no GPU build here)") from None
        if not hasattr(tensorrt, "Builder"):  # e.g. only tensorrt-stubs' .pyi files installed
            raise Skip("missing_requirement", f"{getattr(tensorrt, '__path__', 'tensorrt')}: "
                                              f"a tensorrt package without the library")
    raise Skip("not_implemented", f"backend {backend!r} is not implemented in this quantsweep version")


def simulate_tensorrt(job: Job, precision: str) -> Result:
    """TensorRT INT8 estimated on the CPU: the quantizer's calibration cache applied to the
    float graph as Q/DQ (``quantsweep.calib.qdq``), run later by ONNX Runtime. The row says
    ``mode: simulated``; a cache the simulated TensorRT would ignore fails the row."""
    from pathlib import Path

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
        info = apply_cache(Path(q["artifacts"]["float_model"]), cache, dst, tuple(sim["op_types"]))
    return Result(mode="simulated", backend="tensorrt(sim)", artifacts={"model": str(dst)},
                  data={**info, "simulated_tensorrt": trt, "cache": str(cache_path),
                        "cache_header": cache.header,
                        "cache_verdicts": {v: {"verdict": a, "why": b} for v, (a, b) in verdicts.items()},
                        "build_s": round(time.monotonic() - t0, 3)})


def paddle_inference_build(job: Job, precision: str, int8_model: bool) -> Result:
    """Paddle Inference runs the Paddle model itself (the framework's, or PaddleSlim's quantized
    one), here on the CPU. Paddle-TRT INT8 needs a GPU build of Paddle with TensorRT."""
    from quantsweep.backends import paddle_inference

    q = job.inputs["quantize"]
    model_dir = q["artifacts"].get("paddle_model")
    if not model_dir:
        raise Skip("not_applicable", f"paddle_inference runs Paddle models; quantizer "
                                     f"{q['data'].get('quantizer')!r} of this cell leaves none")
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
