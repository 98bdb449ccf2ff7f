"""PyTorch -> ONNX with torch.onnx.export: the TorchScript-based exporter (dynamo=False) or
the dynamo-based one (dynamo=True, through torch.export and onnxscript). The module is the one
the framework stage described (``backends/torch_module``: the demo's deploy module or a user's
factory), traced with one input of the model's contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantsweep.job import Job, tool_call


def export(job: Job, dst: Path, opset: int) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from quantsweep.backends import torch_module
    from quantsweep.evaluate.preprocess import example_feeds

    src = torch_module.read_source(job.artifact("framework", "model"))
    module = torch_module.build(src)
    spec = job.params["model_spec"]
    args = tuple(torch.from_numpy(a) for a in torch_module.module_inputs(src, example_feeds(spec)))
    output_names = src["output_names"]
    target, plain = torch_module.export_target(module, args)
    tmp = dst.with_name(".export-" + dst.name)
    opts = job.params["model_spec"]["export"]
    dynamo = opts["exporter"] == "dynamo"
    names = {"input_names": [t["name"] for t in src["inputs"]], "output_names": output_names}
    kw: dict[str, Any] = {"opset_version": opset, "dynamo": dynamo, **names}
    if opts["dynamic_batch"]:
        if dynamo:  # the dynamo exporter takes torch.export's dynamic shapes
            batch = torch.export.Dim("N", min=1, max=64)
            shapes = tuple({0: batch} for _ in args)
            kw["dynamic_shapes"] = shapes if plain else (shapes,)  # the adapter's *xs is one argument
        else:
            kw["dynamic_axes"] = {n: {0: "N"} for n in names["input_names"] + output_names}
    with tool_call("export_failed", f"torch.onnx.export ({opts['exporter']}) at opset {opset}"):
        torch.onnx.export(target, args, str(tmp), **kw)
    tmp.replace(dst)
    return ({"name": f"torch.onnx.export ({opts['exporter']})", "version": torch.__version__},
            {"dynamic_batch": opts["dynamic_batch"]})

