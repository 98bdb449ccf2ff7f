"""Quantizer ``trt-calibrator``: TensorRT's own INT8 calibration (entropy or min-max calibrator)
fed with the calib split through the model's preprocessing; the cache TensorRT writes is the
cell's ``calibration.cache``, and the graph stays float (implicit INT8). Needs TensorRT <= 10 on
a GPU: TensorRT 11 removed the calibrators, which the row says."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from quantsweep.job import Job, Skip, ToolFailure
from quantsweep.quantize.calibdata import calib_feeds, onnx_bindings


def quantize(job: Job, src: Path, out_dir: Path) -> dict[str, Any]:
    from quantsweep.backends import tensorrt_api

    ok, version = tensorrt_api.available()
    if not ok:
        raise Skip("missing_requirement", version)
    refused = refusal(version)
    if refused:
        raise Skip("not_available", refused)
    opts = job.params.get("options", {})
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(onnx_bindings(src), job.params["model_spec"], manifest,
                        int(job.params["calib_images"]))
    return calibrate(src, feeds, opts.get("algorithm", "EntropyCalibration2"), out_dir, version)


def refusal(version: str) -> str | None:
    """Why TensorRT ``version`` cannot calibrate (None when it can)."""
    from quantsweep.backends.tensorrt_plan import major

    if major(version) >= 11:
        return (f"TensorRT {version} has no INT8 calibrators (removed in 11): quantize with "
                f"explicit Q/DQ (ort-qdq, modelopt-ptq) instead")
    return None


def calibrate(src: Path, feeds: list[dict[str, Any]], algorithm: str, out_dir: Path,
              version: str) -> dict[str, Any]:
    """TensorRT's calibration of ``src`` on ``feeds``: ``out_dir/calibration.cache`` (here, or on
    the GPU host of a hand-off bundle)."""
    from quantsweep.backends import tensorrt_api
    from quantsweep.backends.tensorrt_plan import BuildRequest

    cache = out_dir / "calibration.cache"
    calibrator = tensorrt_api.DataCalibrator(feeds, algorithm, cache)
    t0 = time.monotonic()
    req = BuildRequest(onnx=src, precision="int8", trt_version=version, cache=cache,
                       engine=out_dir / "calibration.engine", batch=(1, 1, 1))
    info = tensorrt_api.build(req, out_dir / "calibration.log", calibrator=calibrator)
    if not cache.exists():
        raise ToolFailure("calibration_failed", f"TensorRT {version} built the INT8 engine but wrote "
                                                f"no calibration cache ({out_dir / 'calibration.log'})")
    return {"tensorrt_version": version, "algorithm": algorithm, "batches": calibrator.batches,
            "calibration": "implicit", "calibrate_s": round(time.monotonic() - t0, 3),
            "engine_bytes": info["engine_bytes"]}
