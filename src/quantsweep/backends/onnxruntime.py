"""ONNX Runtime backend: CPU sessions for FP32 and QDQ models (CUDA/TRT EPs when present)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.backends import Binding, FeedAdapter

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint8)": "uint8",
             "tensor(int8)": "int8", "tensor(bool)": "bool"}


def available() -> tuple[bool, str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return False, f"onnxruntime is not installed in this toolset: {exc}"
    return True, ""


def _session(model: str | Path | bytes, options: dict[str, Any]) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(options.get("threads", 1))
    so.inter_op_num_threads = 1
    if not options.get("spin", True):
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    level = options.get("graph_optimization", "all")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    providers = [p for p in options.get("providers", ["CPUExecutionProvider"])
                 if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
    # a serialized model (bytes) is loaded as it is: graph variants need not touch the disk
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so,
                                providers=providers)


def build(onnx_path: str | Path, precision: str, cache: str | Path | None, out_dir: str | Path,
          options: dict[str, Any]) -> dict[str, Any]:
    """ORT needs no engine: check that a session can be created and report its bindings."""
    if precision not in ("fp32", "int8"):
        raise ValueError(f"onnxruntime backend runs fp32 or QDQ int8 models, not {precision}")
    sess = _session(onnx_path, options)
    return {"artifact": str(onnx_path), "providers": sess.get_providers(),
            "inputs": [vars(b) for b in _bindings(sess)]}


def _bindings(sess: Any) -> list[Binding]:
    return [Binding(i.name, ORT_TYPES.get(i.type, i.type), list(i.shape))
            for i in sess.get_inputs()]


class Runner:
    def __init__(self, model: str | Path | bytes, options: dict[str, Any]):
        self.session = _session(model, options)
        self.inputs = _bindings(self.session)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.adapt = FeedAdapter(self.inputs)
        self.device = "cpu"

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, self.adapt(feeds))
        return dict(zip(self.output_names, outs, strict=True))


def runner(artifact: str | Path | bytes, options: dict[str, Any]) -> Runner:
    return Runner(artifact, options)
