"""Backends: one module each, one interface.

``available() -> (bool, reason)``, ``build(onnx, precision, cache, out_dir, options) -> artifact``,
``runner(artifact, options) -> Runner`` with ``Runner.inputs`` (name, dtype, shape) and
``Runner.infer(feeds) -> dict``. Inputs are cast to the dtype each binding reports (never
assumed): a lossless cast is done and recorded; a lossy one is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class InputDtypeError(TypeError):
    pass


@dataclass
class Binding:
    name: str
    dtype: str
    shape: list[Any]


@dataclass
class Conversion:
    name: str
    fed: str
    bound: str


@dataclass
class FeedAdapter:
    """Casts feeds to the binding dtypes and remembers each conversion it made."""

    bindings: list[Binding]
    conversions: dict[str, Conversion] = field(default_factory=dict)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = {b.name for b in self.bindings}
        missing = names - set(feeds)
        extra = set(feeds) - names
        if missing or extra:
            raise KeyError(f"inputs do not match the model: model has {sorted(names)}, "
                           f"fed {sorted(feeds)}")
        out = {}
        for b in self.bindings:
            x = np.asarray(feeds[b.name])
            want = np.dtype(b.dtype)
            if x.dtype != want:
                y = x.astype(want)
                both_float = x.dtype.kind == "f" and want.kind == "f"
                if not both_float and not np.array_equal(y.astype(x.dtype), x):
                    raise InputDtypeError(f"input {b.name!r}: {x.dtype} values do not fit the "
                                          f"binding's {want} without loss")
                self.conversions.setdefault(b.name, Conversion(b.name, str(x.dtype), str(want)))
                x = y
            out[b.name] = x
        return out


# the module whose ``runner(artifact, options)`` runs each backend's artifact
RUNNER_MODULES = {
    "onnxruntime": "onnxruntime", "tensorrt_sim": "onnxruntime",  # the simulated Q/DQ graph: ORT
    "paddle_inference": "paddle_inference", "paddle_tensorrt": "paddle_inference",
    "tensorrt_api": "tensorrt_api", "trtexec": "tensorrt_api",  # trtexec's engine: same runtime
    "torch": "torch_module",  # a framework stage's torch module (demo, a user's factory, Ultralytics)
}


def make_runner(backend: str, model: str, options: dict[str, Any]) -> Any:
    """The runner of ``model`` on ``backend`` (its module imported only now)."""
    import importlib

    from quantsweep.job import ToolFailure

    if backend not in RUNNER_MODULES:
        raise ToolFailure("not_implemented", f"no runner for backend {backend!r}")
    return importlib.import_module(f"quantsweep.backends.{RUNNER_MODULES[backend]}").runner(model, options)
