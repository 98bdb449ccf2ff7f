"""Quantizer ``modelopt-ptq``: NVIDIA ModelOpt's ONNX INT8 post-training quantization, run on the
CPU (``calibration_eps=["cpu"]``) in its own toolset (its onnx pins clash with paddle2onnx 2.x).
It writes a Q/DQ graph following TensorRT's explicit-quantization rules; the rest of the graph is
kept FP32 (``high_precision_dtype``) so that ONNX Runtime's CPU provider runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.job import Job, tool_call
from quantsweep.quantize.calibdata import calib_feeds, onnx_bindings


def exclude_patterns(names: list[str]) -> list[str]:
    """ModelOpt reads ``nodes_to_exclude`` as regular expressions matched at the start of each
    node name (``re.match``): a bare name would also exclude every node it is a prefix of
    (``/conv1/Conv`` matches ``/conv1/Conv_1``) and misread ``.``/``[``; each name is escaped
    and anchored."""
    import re

    return [f"{re.escape(n)}$" for n in names]


def quantize(job: Job, src: Path, dst: Path, exclude: list[str] | None = None) -> dict[str, Any]:
    """``exclude``: nodes left in float (ModelOpt's ``nodes_to_exclude``; a recipe's layers)."""
    with tool_call("tool_missing", "importing modelopt.onnx.quantization"):
        from importlib.metadata import version

        from modelopt.onnx.quantization import quantize as mo_quantize
    opts = job.params.get("options", {})
    manifest = json.loads(Path(job.params["dataset"]["manifest"]).read_text())
    feeds = calib_feeds(onnx_bindings(src), job.params["model_spec"], manifest,
                        int(job.params["calib_images"]))
    # one array per input, the calib images stacked along the batch axis
    data = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    method = opts.get("calibration_method", "entropy")
    with tool_call("quantize_failed", f"modelopt INT8 PTQ of {src}"):
        mo_quantize(str(src), quantize_mode="int8", calibration_data=data,
                    calibration_method=method, calibration_eps=["cpu"],
                    op_types_to_quantize=opts.get("op_types"), output_path=str(dst),
                    nodes_to_exclude=exclude_patterns(exclude) if exclude else None,
                    high_precision_dtype="fp32", log_level="WARNING")
    return {"tool": f"nvidia-modelopt {version('nvidia-modelopt')}", "calibration_method": method,
            "calib_images": len(feeds), "nodes_to_exclude": list(exclude or [])}
