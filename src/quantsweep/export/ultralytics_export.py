"""Ultralytics -> ONNX with Ultralytics' own ``export(format="onnx", opset, imgsz, dynamic,
simplify)``, on the checkpoint the framework stage saved (copied first: Ultralytics writes the
ONNX next to it). The ONNX carries Ultralytics' metadata (class names, stride, task)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from quantsweep.job import Job, ToolFailure, tool_call

OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}  # no hub, no pip at run time


def export(job: Job, dst: Path, opset: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from quantsweep.backends.torch_module import read_source

    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    src = read_source(job.artifact("framework", "model"))["ultralytics"]
    with tool_call("tool_missing", "importing ultralytics"):
        import ultralytics
        from ultralytics import RTDETR, YOLO
    work = (dst.parent / ".ultralytics-export").resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pt = work / "model.pt"
    shutil.copyfile(src["path"], pt)
    spec = job.params["model_spec"]
    opts = spec["export"]
    kw = {"format": "onnx", "opset": opset, "imgsz": list(spec["preprocess"]["size"]),
          "dynamic": opts["dynamic"], "simplify": opts["simplify"]}
    cwd = Path.cwd()
    os.chdir(work)  # anything Ultralytics writes beside the model stays in the work folder
    try:
        with tool_call("export_failed", f"Ultralytics {ultralytics.__version__} export {kw}"):
            f = (RTDETR if src["rtdetr"] else YOLO)(str(pt)).export(**kw)
    finally:
        os.chdir(cwd)
    out = Path(f) if f else None
    if out is not None and not out.is_absolute():
        out = work / out
    if out is None or not out.is_file():
        raise ToolFailure("export_failed", f"Ultralytics export {kw} returned {f!r}, no ONNX file")
    out.replace(dst)
    shutil.rmtree(work, ignore_errors=True)
    return ({"name": "ultralytics export", "version": ultralytics.__version__},
            {"ultralytics_export": kw})
