"""Paddle Inference backend: the predictor on the CPU (run for real here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.backends import Binding, FeedAdapter

PD_TYPES = {"FLOAT32": "float32", "INT32": "int32", "INT64": "int64", "FLOAT16": "float16",
            "UINT8": "uint8", "INT8": "int8", "BOOL": "bool", "FLOAT64": "float64"}


def available() -> tuple[bool, str]:
    try:
        import paddle.inference  # noqa: F401
    except ImportError as exc:
        return False, f"paddle is not installed in this toolset: {exc}"
    return True, ""


class Runner:
    def __init__(self, model_dir: str | Path, options: dict[str, Any]):
        d = Path(model_dir)
        model_file = next((p for p in (d / "inference.json", d / "inference.pdmodel") if p.exists()),
                          None)
        if model_file is None:
            raise FileNotFoundError(f"{d}: no inference.json or inference.pdmodel")
        os.environ["FLAGS_enable_pir_api"] = "1" if model_file.suffix == ".json" else "0"
        from paddle import inference

        cfg = inference.Config(str(model_file), str(d / "inference.pdiparams"))
        cfg.disable_gpu()
        cfg.set_cpu_math_library_num_threads(int(options.get("threads", 1)))
        if not options.get("onednn", False):
            cfg.disable_mkldnn()
        cfg.disable_glog_info()
        self.predictor = inference.create_predictor(cfg)
        self.device = "cpu"
        self.meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
        names = self.predictor.get_input_names()
        self.inputs = []
        for n in names:
            h = self.predictor.get_input_handle(n)
            dt = str(h.type()).rsplit(".", 1)[-1]
            self.inputs.append(Binding(n, PD_TYPES.get(dt, "float32"), list(h.shape())))
        self.adapt = FeedAdapter(self.inputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, x in self.adapt(feeds).items():
            h = self.predictor.get_input_handle(name)
            h.reshape(list(x.shape))
            h.copy_from_cpu(np.ascontiguousarray(x))
        self.predictor.run()
        return {n: self.predictor.get_output_handle(n).copy_to_cpu()
                for n in self.predictor.get_output_names()}


def runner(model_dir: str | Path, options: dict[str, Any]) -> Runner:
    return Runner(model_dir, options)
