"""Calibration data: the calib split through the model's own preprocessing (the evaluation's),
cast to the dtypes the model declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quantsweep.backends import Binding, FeedAdapter
from quantsweep.job import ToolFailure


def onnx_bindings(onnx_path: Path) -> list[Binding]:
    import onnx

    from quantsweep.export import describe

    desc = describe(onnx.load(str(onnx_path), load_external_data=False))
    return [Binding(i["name"], i["dtype"], i["shape"]) for i in desc["inputs"]]


def contract_bindings(spec: dict[str, Any]) -> list[Binding]:
    return [Binding(i["name"], i.get("dtype", "float32"), i.get("shape", [])) for i in spec["inputs"]]


def calib_feeds(bindings: list[Binding], spec: dict[str, Any], manifest: dict[str, Any],
                n: int) -> list[dict[str, np.ndarray]]:
    """The model's inputs for ``n`` calib images (batch 1 each), in the bindings' dtypes."""
    from quantsweep.evaluate.preprocess import build_feeds, iter_preprocessed, val_images

    split = manifest["splits"]["calib"]
    images = val_images(manifest, "calib", None)
    if not images:
        raise ToolFailure("calib_empty", f"{split['annotations']}: the calib split has no images")
    if n > len(images):
        raise ToolFailure("calib_too_small",
                          f"quantize.calib_images is {n} but the calib split "
                          f"({split['annotations']}) has {len(images)} images; lower "
                          f"quantize.calib_images or give a larger calib split")
    adapt = FeedAdapter(bindings)
    return [adapt(build_feeds([x], [meta], spec["inputs"]))
            for _, x, meta in iter_preprocessed(images[:n], spec["preprocess"])]
