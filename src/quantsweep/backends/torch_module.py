"""A PyTorch model as the framework stage left it: a directory with ``source.json`` that says how
to build the module (``factory`` "package.module:function" + ``kwargs``, optional ``weights``
and ``python_path``) and what its inputs and outputs are called. Used by the torch exporter,
the export parity check and the framework evaluation; the module is imported by name, so no
model source is imported here.

``source.json``: {"factory", "kwargs", "weights", "weights_key", "python_path", "inputs":
[{"name", "dtype"}], "output_names"}"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.job import ToolFailure

SOURCE_FILE = "source.json"


def read_source(model_dir: str | Path) -> dict[str, Any]:
    p = Path(model_dir) / SOURCE_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ToolFailure("framework_load", f"{p}: unreadable: {exc}") from None


def import_factory(ref: str, python_path: list[str] | None = None) -> Any:
    """``"package.module:function"`` -> the callable; the folders of ``python_path`` first."""
    for folder in reversed(python_path or []):
        if folder not in sys.path:
            sys.path.insert(0, str(folder))
    mod_name, sep, attr = ref.partition(":")
    if not sep or not mod_name or not attr:
        raise ToolFailure("factory_error", f"factory {ref!r}: expected 'package.module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # noqa: BLE001 - any import-time error of the user's code
        raise ToolFailure("factory_error", f"factory {ref!r}: cannot import {mod_name}: "
                                           f"{type(exc).__name__}: {exc}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ToolFailure("factory_error", f"factory {ref!r}: {mod_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ToolFailure("factory_error", f"factory {ref!r} is not callable")
    return obj


def load_weights(module: Any, weights: str, key: str | None) -> None:
    """A state dict, or a checkpoint holding one under ``key`` (or under 'state_dict'/'model');
    keys must fit exactly: the first five missing and unexpected ones are named."""
    import torch

    try:
        obj = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ToolFailure("weights_error", f"{weights}: cannot be read by torch.load: {exc}") from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ToolFailure("weights_error", f"{weights}: no entry {key!r} (weights_key); entries: "
                                               f"{sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__}")
        obj = obj[key]
    elif isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ToolFailure("weights_error", f"{weights}: holds a {type(obj).__name__}, not a state dict")
    missing, unexpected = module.load_state_dict(obj, strict=False)
    if missing or unexpected:
        raise ToolFailure("weights_mismatch", f"{weights}: the keys do not fit the module "
                                              f"({len(missing)} missing: {list(missing)[:5]}; "
                                              f"{len(unexpected)} unexpected: {list(unexpected)[:5]})")


def build(src: dict[str, Any]) -> Any:
    """The module ``source.json`` describes, in eval mode, with its weights."""
    import torch

    fn = import_factory(src["factory"], src.get("python_path"))
    try:
        module = fn(**(src.get("kwargs") or {}))
    except Exception as exc:  # noqa: BLE001 - the user's factory
        raise ToolFailure("factory_error", f"factory {src['factory']!r} raised "
                                           f"{type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ToolFailure("factory_error", f"factory {src['factory']!r} returned a "
                                           f"{type(module).__name__}, not a torch.nn.Module")
    if src.get("weights"):
        load_weights(module, src["weights"], src.get("weights_key"))
    return module.eval()


def flatten_outputs(out: Any) -> tuple[list[str] | None, list[Any]]:
    """(names if the module named them, tensors) of what a detector returns: a tensor, a tuple or
    list of tensors, a dict, or a list of per-image dicts (torchvision; batch 1)."""
    if isinstance(out, list | tuple) and out and isinstance(out[0], dict):
        if len(out) != 1:
            raise ToolFailure("unsupported_outputs", f"the module returned {len(out)} per-image "
                                                     f"dicts; export takes batch 1")
        out = out[0]
    if isinstance(out, dict):
        return list(out), list(out.values())
    if isinstance(out, list | tuple):
        return None, list(out)
    return None, [out]


class Adapter:
    """The user's module with outputs flattened to a tuple: what torch.onnx.export traces."""

    @staticmethod
    def wrap(module: Any) -> Any:
        import torch

        class Flat(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = module

            def forward(self, *xs: Any) -> Any:
                return tuple(flatten_outputs(self.inner(*xs))[1])

        return Flat().eval()


def export_target(module: Any, args: tuple[Any, ...]) -> tuple[Any, bool]:
    """(what torch.onnx.export traces, whether it is the module itself): a module that returns a
    tuple of tensors is exported as it is; any other (a dict, torchvision's list of dicts)
    through the adapter that flattens its outputs (whose ``*xs`` takes the inputs as one
    argument: the dynamo exporter's dynamic shapes nest one level deeper)."""
    import torch

    with torch.no_grad():
        out = module(*args)
    plain = isinstance(out, tuple) and all(isinstance(o, torch.Tensor) for o in out)
    return (module if plain else Adapter.wrap(module)), plain


def module_inputs(src: dict[str, Any], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The module's positional inputs from feeds keyed by the model's contract: by name, else by
    position (the exported graph then keeps the module's own names, and the contract check of
    the export names the difference); each in the dtype ``source.json`` gives."""
    names = [t["name"] for t in src["inputs"]]
    if all(n in feeds for n in names):
        arrays = [feeds[n] for n in names]
    elif len(feeds) == len(names):
        arrays = list(feeds.values())
    else:
        raise ToolFailure("contract_mismatch", f"the module takes {len(names)} inputs {names}; the "
                                               f"model's contract declares {list(feeds)}")
    out = []
    for a, t in zip(arrays, src["inputs"], strict=True):
        a = np.asarray(a)
        out.append(np.ascontiguousarray(a.astype(t.get("dtype") or a.dtype, copy=False)))
    return out


class Runner:
    """Runs the module eagerly (export parity reference, framework evaluation)."""

    def __init__(self, model_dir: str | Path, options: dict[str, Any]):
        import torch

        torch.set_num_threads(int(options.get("threads", 1)))
        self.src = read_source(model_dir)
        self.model = build(self.src)
        self.device = "cpu"

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(a) for a in module_inputs(self.src, feeds)]
        with torch.no_grad():
            names, outs = flatten_outputs(self.model(*args))
        names = self.src.get("output_names") or names or [f"output{i}" for i in range(len(outs))]
        return {n: o.detach().numpy() for n, o in zip(names, outs, strict=False)}


def runner(model_dir: str | Path, options: dict[str, Any]) -> Runner:
    return Runner(model_dir, options)
