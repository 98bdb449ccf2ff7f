"""PyTorch -> ONNX with torch.onnx.export (TorchScript-based exporter)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantsweep.job import Job, tool_call


def export(job: Job, dst: Path, opset: int) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np
    import torch

    from quantsweep.demo.torch_model import load_deploy

    model_dir = job.artifact("framework", "model")
    meta = json.loads((model_dir / "meta.json").read_text())
    dep = load_deploy(model_dir / "weights.npz", meta)
    s = meta["input_size"]
    images = torch.zeros(1, 3, s, s)
    sizes = torch.from_numpy(np.array([[640, 480]], np.int32))
    tmp = dst.with_name(".export-" + dst.name)
    dynamo = bool(job.params.get("dynamo", False))
    with tool_call("export_failed", f"torch.onnx.export at opset {opset}"):
        torch.onnx.export(dep, (images, sizes), str(tmp), opset_version=opset,
                          input_names=["images", "orig_target_sizes"],
                          output_names=["labels", "boxes", "scores"],
                          dynamic_axes={"images": {0: "N"}, "orig_target_sizes": {0: "N"},
                                        "labels": {0: "N"}, "boxes": {0: "N"},
                                        "scores": {0: "N"}},
                          dynamo=dynamo)
    tmp.replace(dst)
    return {"name": "torch.onnx.export" + (" (dynamo)" if dynamo else ""),
            "version": torch.__version__}, {}
