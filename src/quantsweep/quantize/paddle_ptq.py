"""``paddleslim-ptq``: post-training quantization of the Paddle model, then paddle2onnx.

Paddle 2.x: PaddleSlim's ``quant_post_static``. Paddle 3.x: Paddle's own static
``PostTrainingQuantization`` (what ``quant_post_static`` wraps), with PIR off. The quantized
Paddle model is then exported by the toolset's paddle2onnx twice, as field report 001 does:
``deploy_backend tensorrt`` + ``save_calibration_file`` (a float ONNX + ``calibration.cache``)
and ``deploy_backend onnxruntime`` (a QDQ ONNX). paddle2onnx 2.x cannot convert quantized
models; its own abort message is the row's reason."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quantsweep.job import Job, ToolFailure, tool_call


def _loader(feeds: list[dict[str, Any]], names: list[str]) -> Any:
    """A ``paddle.io.DataLoader`` over prepared feeds (Paddle's PTQ accepts nothing else)."""
    import paddle

    first = feeds[0]
    vars_ = [paddle.static.data(n, [None, *first[n].shape[1:]], str(first[n].dtype)) for n in names]

    class Calib(paddle.io.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return len(feeds)

        def __getitem__(self, i: int) -> tuple[Any, ...]:
            return tuple(feeds[i][n][0] for n in names)

    return paddle.io.DataLoader(Calib(), feed_list=vars_, batch_size=1, return_list=False,
                                places=paddle.CPUPlace())


def quantize_paddle(job: Job, model_dir: Path, out_dir: Path, feeds: list[dict[str, Any]],
                    algo: str) -> dict[str, Any]:
    """Writes the quantized Paddle inference model to ``out_dir``."""
    from quantsweep.export.paddle_export import check_format, locate_model

    model_file, params_file = locate_model(model_dir)
    os.environ["FLAGS_enable_pir_api"] = "0"  # Paddle's static PTQ works on legacy programs
    with tool_call("tool_missing", "importing paddle"):
        import paddle
    check_format(model_file, paddle.__version__)
    if model_file.suffix == ".json":
        raise ToolFailure("unsupported_format", f"{model_file}: Paddle's post-training "
                                                f"quantization reads legacy programs "
                                                f"(inference.pdmodel), not PIR models")
    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    names = list(feeds[0])
    loader = _loader(feeds, names)
    kw = dict(model_filename=model_file.name, params_filename=params_file.name, batch_nums=len(feeds),
              algo=algo, onnx_format=True)
    major = int(paddle.__version__.split(".")[0])
    if major < 3:
        from importlib.metadata import version

        with tool_call("tool_missing", "importing paddleslim"):
            from paddleslim.quant import quant_post_static
        tool = f"paddleslim {version('paddleslim')} quant_post_static"
        with tool_call("quantize_failed", f"{tool} ({algo})"):
            quant_post_static(executor=exe, model_dir=str(model_dir), quantize_model_path=str(out_dir),
                              data_loader=loader, save_model_filename="inference.pdmodel",
                              save_params_filename="inference.pdiparams", **kw)
    else:
        from paddle.static.quantization import PostTrainingQuantization

        tool = f"paddle {paddle.__version__} PostTrainingQuantization"
        with tool_call("quantize_failed", f"{tool} ({algo})"):
            ptq = PostTrainingQuantization(executor=exe, model_dir=str(model_dir),
                                           data_loader=loader, **kw)
            ptq.quantize()
            ptq.save_quantized_model(str(out_dir), model_filename="inference.pdmodel",
                                     params_filename="inference.pdiparams")
    paddle.disable_static()
    return {"tool": tool, "algo": algo, "paddle": paddle.__version__}


def export_quantized(job: Job, qdir: Path, out_dir: Path, opset: int) -> dict[str, Any]:
    """paddle2onnx on the quantized model: TensorRT (float ONNX + cache) and ONNX Runtime (QDQ)."""
    from quantsweep.export.paddle_export import export_model

    # ONNX Runtime first: a paddle2onnx that cannot convert quantized models says so here
    ort = export_model(qdir, out_dir / "model.onnx", opset,
                       {"method": "cli", "deploy_backend": "onnxruntime",
                        "enable_onnx_checker": True})
    trt = export_model(qdir, out_dir / "float_model.onnx", opset,
                       {"method": "cli", "deploy_backend": "tensorrt",
                        "save_calibration_file": True, "enable_onnx_checker": True},
                       calib=out_dir / "calibration.cache")
    if not (out_dir / "calibration.cache").exists():
        raise ToolFailure("no_cache", f"{trt['command']} wrote no calibration cache")
    return {"paddle2onnx_tensorrt": trt["command"], "paddle2onnx_onnxruntime": ort["command"]}


def run(job: Job, feeds: list[dict[str, Any]]) -> dict[str, Any]:
    model_dir = job.artifact("framework", "model")
    qdir = job.out_dir / "paddle_model"
    opts = job.params["options"]
    info = quantize_paddle(job, model_dir, qdir, feeds, opts["algo"])
    meta = model_dir / "meta.json"
    if meta.exists():  # the demo's description travels with the model
        (qdir / "meta.json").write_text(meta.read_text())
    info.update(export_quantized(job, qdir, job.out_dir, int(job.params["opset"])))
    (job.out_dir / "ptq.json").write_text(json.dumps(info))
    return info
