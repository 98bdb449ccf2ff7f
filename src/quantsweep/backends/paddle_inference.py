"""Paddle Inference backend: the predictor on the CPU (run for real here), and Paddle-TRT (the
``paddle_tensorrt`` backend: Paddle's TensorRT subgraph engine, INT8 for an already-quantized
model with calibration mode off), which needs a Paddle compiled with CUDA and TensorRT."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.backends import Binding, FeedAdapter
from quantsweep.job import ToolFailure

PD_TYPES = {"FLOAT32": "float32", "INT32": "int32", "INT64": "int64", "FLOAT16": "float16",
            "UINT8": "uint8", "INT8": "int8", "BOOL": "bool", "FLOAT64": "float64"}


def available() -> tuple[bool, str]:
    try:
        import paddle.inference  # noqa: F401
    except ImportError as exc:
        return False, f"paddle is not installed in this toolset: {exc}"
    return True, ""


def tensorrt_available() -> tuple[bool, str]:
    """Paddle-TRT needs a Paddle built with CUDA and TensorRT; a CPU wheel reports (0, 0, 0)."""
    ok, why = available()
    if not ok:
        return ok, why
    import paddle
    from paddle import inference

    built = tuple(inference.get_trt_compile_version())
    if not paddle.is_compiled_with_cuda() or not any(built):
        return False, (f"paddle {paddle.__version__} in this toolset is not compiled with CUDA and "
                       f"TensorRT (get_trt_compile_version() = {built}): Paddle-TRT needs a GPU build")
    return True, f"TensorRT {'.'.join(map(str, built))}"


PRECISIONS = {"int8": "Int8", "fp16": "Half", "fp32": "Float32"}


def configure_tensorrt(cfg: Any, precision: str, quantized: bool,
                       shapes: dict[str, tuple[list[int], ...]], options: dict[str, Any]) -> None:
    """Paddle-TRT on ``cfg`` (a ``paddle.inference.Config``): the GPU, the TensorRT subgraph
    engine at ``precision``, dynamic-shape ranges per input. An already-quantized model (Q/DQ
    ops from PaddleSlim) builds INT8 from its own scales, so calibration mode is off; INT8 of a
    float model would calibrate at run time, which this backend does not do."""
    from paddle import inference

    if precision == "int8" and not quantized:
        raise ValueError("Paddle-TRT INT8 here runs quantized models (calibration mode off): "
                         "quantize with PaddleSlim first")
    cfg.enable_use_gpu(int(options.get("gpu_mem_mb", 256)), int(options.get("device_id", 0)))
    cfg.enable_tensorrt_engine(
        workspace_size=int(options.get("workspace_mib", 1024)) << 20, max_batch_size=1,
        min_subgraph_size=int(options.get("min_subgraph_size", 3)),
        precision_mode=getattr(inference.PrecisionType, PRECISIONS[precision]),
        use_static=False, use_calib_mode=False)
    if shapes:
        cfg.set_trt_dynamic_shape_info({k: v[0] for k, v in shapes.items()},
                                       {k: v[2] for k, v in shapes.items()},
                                       {k: v[1] for k, v in shapes.items()})


# PIR (Paddle >= 3.0) or legacy program, as paddle.jit.save / PaddleDetection's export name them;
# the params file has the model file's stem (inference.pdiparams, model.pdiparams)
MODEL_FILES = ("inference.json", "inference.pdmodel", "model.json", "model.pdmodel")


def locate_model(model_dir: Path) -> tuple[Path, Path]:
    """The model and params files of a Paddle inference model directory."""
    if not model_dir.is_dir():
        raise ToolFailure("invalid_model", f"{model_dir}: not a directory (a Paddle inference "
                                           f"model is a directory with {' or '.join(MODEL_FILES)} "
                                           f"and its .pdiparams)")
    found = [model_dir / f for f in MODEL_FILES if (model_dir / f).exists()]
    if not found:
        raise ToolFailure("invalid_model", f"{model_dir}: no model file ({' or '.join(MODEL_FILES)});"
                                           f" the directory has {sorted(p.name for p in model_dir.iterdir())}")
    params = found[0].with_suffix(".pdiparams")
    if not params.exists():
        raise ToolFailure("invalid_model", f"{model_dir}: the Paddle model has no params file "
                                           f"({params.name}) next to {found[0].name}")
    return found[0], params


class Runner:
    def __init__(self, model_dir: str | Path, options: dict[str, Any]):
        d = Path(model_dir)
        self.files = locate_model(d)
        os.environ["FLAGS_enable_pir_api"] = "1" if self.files[0].suffix == ".json" else "0"
        self.options = options
        # oneDNN where asked (the framework evaluation), until a first run shows that this
        # Paddle's oneDNN executor cannot run the program (Paddle 3.3.1 on a PIR program:
        # "ConvertPirAttribute2RuntimeAttribute not support [pir::ArrayAttribute<...>]"); then
        # the plain CPU kernels, and ``settings`` says why
        self.settings: dict[str, Any] = {
            "onednn": bool(options.get("onednn", False)) and not options.get("paddle_tensorrt")}
        self._ran = False
        self.predictor = self._predictor()
        self.meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
        names = self.predictor.get_input_names()
        self.inputs = []
        for n in names:
            h = self.predictor.get_input_handle(n)
            dt = str(h.type()).rsplit(".", 1)[-1]
            self.inputs.append(Binding(n, PD_TYPES.get(dt, "float32"), list(h.shape())))
        self.adapt = FeedAdapter(self.inputs)

    def _predictor(self) -> Any:
        from paddle import inference

        cfg = inference.Config(*(str(f) for f in self.files))
        trt = self.options.get("paddle_tensorrt")
        if trt:  # {precision, quantized, shapes, ...}: Paddle-TRT on the GPU
            configure_tensorrt(cfg, trt["precision"], bool(trt.get("quantized")),
                               trt.get("shapes", {}), trt)
            self.device = "cuda"
        else:
            cfg.disable_gpu()
            cfg.set_cpu_math_library_num_threads(int(self.options.get("threads", 1)))
            if self.settings["onednn"]:
                cfg.enable_mkldnn()
            else:
                cfg.disable_mkldnn()
            self.device = "cpu"
        cfg.disable_glog_info()
        return inference.create_predictor(cfg)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, x in self.adapt(feeds).items():
            h = self.predictor.get_input_handle(name)
            h.reshape(list(x.shape))
            h.copy_from_cpu(np.ascontiguousarray(x))
        self.predictor.run()
        return {n: self.predictor.get_output_handle(n).copy_to_cpu()
                for n in self.predictor.get_output_names()}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._run(feeds)
        except Exception as exc:
            if not self.settings["onednn"] or self._ran:
                raise
            self.settings = {"onednn": False,
                             "onednn_error": " ".join(str(exc).split())[:300]}
            self.predictor = self._predictor()
            out = self._run(feeds)
        self._ran = True
        return out


def runner(model_dir: str | Path, options: dict[str, Any]) -> Runner:
    return Runner(model_dir, options)
