"""Paddle -> ONNX with paddle2onnx (Python API), in the toolset's paddle2onnx version."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quantsweep.job import Job, ToolFailure, tool_call


def export(job: Job, dst: Path, opset: int) -> tuple[dict[str, Any], dict[str, Any]]:
    model_dir = job.artifact("framework", "model")
    fw = job.inputs["framework"]["data"]
    model_file = model_dir / fw["model_file"]
    params_file = model_dir / "inference.pdiparams"
    if not params_file.exists():
        raise ToolFailure("invalid_model", f"{model_dir}: the Paddle model has no params file "
                                           f"(inference.pdiparams)")
    os.environ["FLAGS_enable_pir_api"] = "1" if model_file.suffix == ".json" else "0"
    with tool_call("tool_missing", "importing paddle2onnx"):
        import paddle2onnx
    tmp = dst.with_name(".export-" + dst.name)
    with tool_call("export_failed", f"paddle2onnx {paddle2onnx.__version__} at opset {opset}"):
        paddle2onnx.export(str(model_file), str(params_file), save_file=str(tmp),
                           opset_version=opset, auto_upgrade_opset=False,
                           enable_onnx_checker=True, deploy_backend="onnxruntime")
    if not tmp.exists():
        raise ToolFailure("export_failed", f"paddle2onnx {paddle2onnx.__version__} wrote no model "
                                           f"at opset {opset}")
    tmp.replace(dst)
    meta = json.loads((model_dir / "meta.json").read_text())
    return {"name": "paddle2onnx", "version": paddle2onnx.__version__}, {"input_size": meta["input_size"]}
