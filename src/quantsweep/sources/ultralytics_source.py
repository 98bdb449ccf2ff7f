"""Source ``ultralytics``: an Ultralytics checkpoint (``.pt``) or model ``.yaml`` (built at
random init, seeded). The framework stage loads it with Ultralytics in the cell's toolset,
refuses what is not a detection model, optionally trains it (``train:``) on the sweep's own
train split converted to Ultralytics' dataset format, and saves the checkpoint the exporter
and the parity reference both read (a ``.yaml`` built twice would give two different random
networks). Export is Ultralytics' own ``export(format="onnx")``
(``export/ultralytics_export.py``)."""

from __future__ import annotations

import json
import os
import shutil
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


def write_yolo_dataset(manifest: dict[str, Any], out: Path,
                       splits: tuple[str, ...] = ("train", "val")) -> Path:
    """The manifest's COCO splits in Ultralytics' dataset format: ``images/<split>/`` (hard
    links, else copies), ``labels/<split>/<stem>.txt`` (``class cx cy w h``, normalized; class =
    the category's position in the manifest) and ``data.yaml``; returns the yaml's path. Crowd
    boxes are left out, as Ultralytics' own COCO converter does."""
    cats = [c["id"] for c in manifest["categories"]]
    index = {cid: i for i, cid in enumerate(cats)}
    for split in splits:
        sp = manifest["splits"][split]
        coco = json.loads(Path(sp["annotations"]).read_text(encoding="utf-8"))
        img_dir, lab_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        lines: dict[int, list[str]] = {im["id"]: [] for im in coco["images"]}
        size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
        for a in coco["annotations"]:
            if a.get("iscrowd"):
                continue
            w, h = size[a["image_id"]]
            x, y, bw, bh = a["bbox"]
            lines[a["image_id"]].append(
                f"{index[a['category_id']]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} "
                f"{bw / w:.6f} {bh / h:.6f}")
        for im in coco["images"]:
            src, dst = Path(sp["images"]) / im["file_name"], img_dir / Path(im["file_name"]).name
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            (lab_dir / f"{dst.stem}.txt").write_text("".join(f"{ln}\n" for ln in lines[im["id"]]))
    names = "".join(f"  {i}: {json.dumps(c['name'])}\n" for i, c in enumerate(manifest["categories"]))
    data = out / "data.yaml"
    data.write_text(f"path: {json.dumps(str(out.resolve()))}\n"
                    + "".join(f"{s}: images/{s}\n" for s in splits) + f"names:\n{names}")
    return data


def train(model: Any, job: Job, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """Ultralytics' own ``model.train`` on the sweep's train split (validating on its val split),
    on the CPU, seeded and deterministic; returns what the row records."""
    import time

    from quantsweep.dataset import load_manifest

    work = (job.out_dir / "train").resolve()
    shutil.rmtree(work, ignore_errors=True)
    data = write_yolo_dataset(load_manifest(job.params["dataset"]["manifest"]), work / "dataset")
    kw = {"data": str(data), "epochs": opts["epochs"], "imgsz": opts["imgsz"],
          "batch": opts["batch"], "seed": seed, "deterministic": True, "device": "cpu",
          "workers": opts["workers"], "project": str(work), "name": "run", "exist_ok": True,
          "plots": False, "val": opts["val"], "verbose": False}
    t0 = time.monotonic()
    cwd = Path.cwd()
    os.chdir(work)  # Ultralytics may write beside the working directory
    try:
        with tool_call("train_failed", f"Ultralytics train {kw}"):
            model.train(**kw)
    finally:
        os.chdir(cwd)
    seconds = round(time.monotonic() - t0, 1)
    out: dict[str, Any] = {"train_seconds": seconds, "train_options": kw}
    csv = work / "run" / "results.csv"
    if csv.is_file():  # Ultralytics' per-epoch log: the validation mAP it reached
        import csv as csvlib

        with csv.open(newline="") as f:
            rows = [{k.strip(): v for k, v in r.items()} for r in csvlib.DictReader(f)]
        col = "metrics/mAP50-95(B)"
        if rows and col in rows[0]:
            out["train_val_map50_95"] = [round(float(r[col]), 4) for r in rows]
    return out


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

    trained = train(model, job, spec["train"], int(spec.get("seed", 0))) if spec.get("train") \
        else {}
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
                        "classes": len(names), **trained})
