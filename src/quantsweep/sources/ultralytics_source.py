"""Source ``ultralytics``: an Ultralytics checkpoint (``.pt``) or model ``.yaml`` (built at
random init, seeded). The framework stage loads it with Ultralytics in the cell's toolset,
refuses what is not a detection model, and saves the checkpoint the exporter and the parity
reference both read (a ``.yaml`` built twice would give two different random networks).
Export is Ultralytics' own ``export(format="onnx")`` (``export/ultralytics_export.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quantsweep.export.ultralytics_export import OFFLINE
from quantsweep.job import Job, Result, ToolFailure, tool_call


def load(path: str | Path, rtdetr: bool | None = None) -> Any:
    """An Ultralytics model object (YOLO, or RTDETR for RT-DETR files)."""
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    with tool_call("tool_missing", "importing ultralytics"):
        from ultralytics import RTDETR, YOLO
    if rtdetr is None:
        rtdetr = "rtdetr" in Path(path).name.lower()
    with tool_call("framework_load", f"Ultralytics could not load {path}"):
        return (RTDETR if rtdetr else YOLO)(str(path))


def export_module(path: str, rtdetr: bool, imgsz: list[int]) -> Any:
    """The network as Ultralytics' exporter prepares it for ONNX (fused, eval, its head in export
    mode): the parity reference of the exported graph and the framework evaluation's model."""
    import torch
    from ultralytics.nn.modules import Detect, RTDETRDecoder

    net = load(path, rtdetr).model
    for p in net.parameters():
        p.requires_grad = False
    net = net.eval().float().fuse()
    for m in net.modules():
        if isinstance(m, Detect | RTDETRDecoder):
            m.dynamic, m.export, m.format = False, True, "onnx"
            available = m.num_queries if isinstance(m, RTDETRDecoder) else sum(
                int(imgsz[0] / s) * int(imgsz[1] / s) for s in net.stride.tolist())
            m.max_det = min(300, available)
            m.agnostic_nms, m.xyxy, m.shape = False, False, None

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.net(x)
            return y[0] if isinstance(y, list | tuple) else y

    return Head().eval()


def framework(job: Job) -> Result:
    spec = job.params["model_spec"]
    path = Path(spec["path"])
    with tool_call("tool_missing", "importing torch"):
        import torch
    torch.manual_seed(int(spec.get("seed", 0)))  # a .yaml is built at random init
    model = load(path)
    task = getattr(model, "task", None)
    if task != "detect":
        raise ToolFailure("not_a_detector", f"{path}: an Ultralytics {task!r} model "
                                            f"({type(model.model).__name__}); quantsweep evaluates "
                                            f"detection models (task 'detect')")
    import ultralytics

    out = job.out_dir / "model"
    out.mkdir(parents=True, exist_ok=True)
    pt = out / "model.pt"
    with tool_call("framework_save", f"saving the Ultralytics model {path} as {pt}"):
        model.save(str(pt))
    rtdetr = "rtdetr" in path.name.lower()
    names = [str(v) for _, v in sorted(dict(model.names).items())]
    (out / "source.json").write_text(json.dumps({
        "factory": "quantsweep.sources.ultralytics_source:export_module",
        "kwargs": {"path": str(pt), "rtdetr": rtdetr, "imgsz": list(spec["preprocess"]["size"])},
        "inputs": [{"name": "images", "dtype": "float32"}], "output_names": ["output0"],
        "names": names,
        "ultralytics": {"path": str(pt), "rtdetr": rtdetr, "source": str(path.resolve())}},
        indent=1))
    return Result(backend="torch", artifacts={"model": str(out)},
                  data={"framework": "ultralytics", "version": ultralytics.__version__,
                        "torch": torch.__version__, "model_class": type(model.model).__name__,
                        "classes": len(names)})
