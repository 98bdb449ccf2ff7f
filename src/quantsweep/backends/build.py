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
    if backend == "trtexec" and not shutil.which("trtexec"):
        raise Skip("missing_requirement", "trtexec is not on PATH (TensorRT is not installed)")
    if backend in ("tensorrt_api", "trtexec"):
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise Skip("missing_requirement",
                       "TensorRT is not importable in this toolset (no GPU build here)") from None
    raise Skip("not_implemented", f"backend {backend!r} is not implemented in this quantsweep version")
