"""PyTorch -> ONNX with torch.onnx.export: the TorchScript-based exporter (dynamo=False) or
the dynamo-based one (dynamo=True, through torch.export and onnxscript)."""

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
    opts = job.params["model_spec"]["export"]
    dynamo = opts["exporter"] == "dynamo"
    names = {"input_names": ["images", "orig_target_sizes"],
             "output_names": ["labels", "boxes", "scores"]}
    kw: dict[str, Any] = {"opset_version": opset, "dynamo": dynamo, **names}
    if opts["dynamic_batch"]:
        if dynamo:  # the dynamo exporter takes torch.export's dynamic shapes
            batch = torch.export.Dim("N", min=1, max=64)
            kw["dynamic_shapes"] = ({0: batch}, {0: batch})
        else:
            kw["dynamic_axes"] = {n: {0: "N"} for n in names["input_names"] + names["output_names"]}
    with tool_call("export_failed", f"torch.onnx.export ({opts['exporter']}) at opset {opset}"):
        torch.onnx.export(dep, (images, sizes), str(tmp), **kw)
    tmp.replace(dst)
    return ({"name": f"torch.onnx.export ({opts['exporter']})", "version": torch.__version__},
            {"dynamic_batch": opts["dynamic_batch"]})
