"""Source ``torch``: a user's PyTorch module, built by ``factory`` ("package.module:function",
with ``kwargs``) from the folders of ``python_path``, with optional ``weights`` (a state dict or a
checkpoint; ``weights_key``). The framework stage builds it once in the cell's toolset, runs it on
one input of the contract, and writes ``source.json`` for the exporter, the parity check and the
framework evaluation (``backends/torch_module``)."""

from __future__ import annotations

import json
from pathlib import Path

from quantsweep.job import Job, Result, ToolFailure, tool_call


def framework(job: Job) -> Result:
    spec = job.params["model_spec"]
    with tool_call("tool_missing", "importing torch"):
        import torch

    from quantsweep.backends import torch_module
    from quantsweep.evaluate.preprocess import example_feeds

    src = {"factory": spec["factory"], "kwargs": spec.get("kwargs") or {},
           "weights": str(Path(spec["weights"]).resolve()) if spec.get("weights") else None,
           "weights_key": spec.get("weights_key"),
           "python_path": [str(Path(p).resolve()) for p in spec.get("python_path", [])],
           "inputs": [{"name": t["name"], "dtype": t.get("dtype")} for t in spec["inputs"]],
           "output_names": [o["name"] for o in spec.get("outputs", [])] or None,
           "qat": spec.get("qat")}
    module = torch_module.build(src)
    args = [torch.from_numpy(a) for a in torch_module.module_inputs(src, example_feeds(spec))]
    with tool_call("framework_run", f"running {spec['factory']} on one input of the contract"), \
            torch.no_grad():
        names, outs = torch_module.flatten_outputs(module(*args))
    bad = [type(o).__name__ for o in outs if not isinstance(o, torch.Tensor)]
    if bad:
        raise ToolFailure("unsupported_outputs", f"{spec['factory']} returned {bad}: a detector "
                                                 f"must return tensors (a tuple, a dict, or "
                                                 f"torchvision's list of dicts)")
    src["output_names"] = src["output_names"] or names or [f"output{i}" for i in range(len(outs))]
    if len(src["output_names"]) != len(outs):
        raise ToolFailure("contract", f"models.{spec['name']}.outputs names {len(src['output_names'])} "
                                      f"outputs; {spec['factory']} returns {len(outs)}")
    out = job.out_dir / "model"
    out.mkdir(parents=True, exist_ok=True)
    (out / "source.json").write_text(json.dumps(src, indent=1))
    return Result(backend="torch", artifacts={"model": str(out)},
                  data={"framework": "torch", "version": torch.__version__,
                        "outputs": {n: list(o.shape) for n, o in zip(src["output_names"], outs, strict=True)}})
