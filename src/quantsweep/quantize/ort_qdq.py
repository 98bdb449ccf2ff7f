"""``ort-qdq``: ONNX Runtime's static quantization (``quantize_static``, QDQ format), fed the
calib split through the model's own preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.job import Job, tool_call
from quantsweep.quantize.calibdata import calib_feeds, onnx_bindings


def quantize(job: Job, src: Path, dst: Path, exclude: list[str] | None = None) -> dict[str, Any]:
    """``exclude``: nodes left in float (``nodes_to_exclude``; a recipe's layers)."""
    with tool_call("tool_missing", "importing onnxruntime.quantization"):
        import onnxruntime
        from onnxruntime import quantization as oq
    opts = job.params["options"]
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(onnx_bindings(src), job.params["model_spec"], manifest,
                        int(job.params["calib_images"]))
    # paddle2onnx 1.3.1 keeps every weight in a Constant node; ORT's quantizer finds weights
    # only among initializers and would leave them float (no INT8 weights, no speedup)
    import onnx

    from quantsweep.calib.qdq import constants_to_initializers

    model = onnx.load(str(src))
    moved = constants_to_initializers(model)
    if moved:
        normalized = dst.with_name(".float-initializers.onnx")
        onnx.save(model, str(normalized))
        src = normalized

    class Reader(oq.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    # the same calibration, kept as a TensorRT cache (for the CPU simulation of TRT INT8)
    import tempfile

    from quantsweep import calib
    from quantsweep.calib.qdq import amax_from_tensors_data, calibrate

    with tool_call("calibration_failed", f"onnxruntime {onnxruntime.__version__} calibrator "
                                         f"({opts['calibrate_method']})"), \
            tempfile.TemporaryDirectory(dir=dst.parent) as work:
        ranges = calibrate(src, Reader(), opts["calibrate_method"], opts["op_types"], Path(work))
    amax = amax_from_tensors_data(ranges)
    trt = job.params["cache_tensorrt_version"]
    algorithm = "MinMaxCalibration" if opts["calibrate_method"] == "MinMax" else "EntropyCalibration2"
    cache = calib.from_ranges(amax, calib.trt_version_code(trt), algorithm)
    calib.write(dst.with_name(calib.CACHE_FILE), cache)
    reader = Reader()
    method = getattr(oq.CalibrationMethod, opts["calibrate_method"])
    tmp = dst.with_name(".quant-" + dst.name)
    extra = {"ActivationSymmetric": opts["symmetric_activations"], "WeightSymmetric": True}
    with tool_call("quantize_failed", f"onnxruntime {onnxruntime.__version__} quantize_static "
                                      f"({opts['calibrate_method']})"):
        oq.quantize_static(str(src), str(tmp), reader, quant_format=oq.QuantFormat.QDQ,
                           per_channel=opts["per_channel"],
                           activation_type=getattr(oq.QuantType, opts["activation_type"]),
                           weight_type=getattr(oq.QuantType, opts["weight_type"]),
                           calibrate_method=method, op_types_to_quantize=opts["op_types"],
                           nodes_to_exclude=list(exclude or []), extra_options=extra)
    tmp.replace(dst)
    if moved:
        src.unlink(missing_ok=True)
    return {"tool": f"onnxruntime.quantization {onnxruntime.__version__}",
            "calib_images": len(feeds), **opts, "constants_moved_to_initializers": moved,
            "nodes_to_exclude": list(exclude or []),
            "cache": {"header": cache.header, "tensors": len(cache.scales),
                      "note": f"scales from ONNX Runtime's {opts['calibrate_method']} calibrator, "
                              f"written in TensorRT {trt}'s cache format"}}
