"""Model source ``paddle``: a user's Paddle inference model (PaddleDetection's ``export_model.py``
output: ``model.pdmodel``/``inference.pdmodel`` or PIR ``inference.json``, with its
``.pdiparams``), or another toolset's saved Paddle model (``from:``).

Its framework stage copies nothing and rebuilds nothing: it locates the model files, sets
Paddle's PIR flag for their format, and checks that this toolset's Paddle can read that format.
The export stage then runs paddle2onnx on the directory in place
(``quantsweep.export.paddle_export``), and the framework evaluation runs it in Paddle Inference
(``quantsweep.backends.paddle_inference``)."""

from __future__ import annotations

from pathlib import Path

from quantsweep.backends.paddle_inference import locate_model
from quantsweep.export.paddle_export import check_format, set_pir_flag
from quantsweep.job import Job, Result, tool_call


def framework(job: Job) -> Result:
    """Locate and check the model in this toolset's Paddle (no copy)."""
    spec = job.params["model_spec"]
    model_dir = (job.artifact("source_framework", "model") if "from" in spec
                 else Path(spec["path"]))
    model_file, _ = locate_model(model_dir)
    set_pir_flag(model_file)
    with tool_call("tool_missing", "importing paddle"):
        import paddle
    check_format(model_file, paddle.__version__)
    return Result(backend="paddle_inference", artifacts={"model": str(model_dir)},
                  data={"framework": "paddle", "version": paddle.__version__,
                        "format": "pir" if model_file.suffix == ".json" else "legacy",
                        "model_file": model_file.name})
