"""Export real detector architectures at random init with their own exporters (run under a
toolset's interpreter that has torch, torchvision and ultralytics; no weights are downloaded):

- Ultralytics YOLOv8n from ``yolov8n.yaml`` and RT-DETR-l from ``rtdetr-l.yaml`` by Ultralytics'
  ``export(format="onnx")`` (YOLO_OFFLINE=1);
- torchvision ``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)`` by
  ``torch.onnx.export``;
- an end-to-end graph with NMS inside: the YOLOv8n network + torchvision's ``batched_nms``,
  padded to TensorRT EfficientNMS's outputs (num_dets, det_boxes, det_scores, det_classes).

usage: python real_detectors.py OUT_DIR OPSET IMGSZ  -> OUT_DIR/{name}.onnx + facts.json
(each model's outputs and the largest |torch - ONNX Runtime| on one random input)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")


def _ort_outputs(path: Path, x):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(s.get_outputs(), s.run(None, {s.get_inputs()[0].name: x}),
                                      strict=True)}


def ultralytics_models(out: Path, opset: int, imgsz: int) -> dict[str, dict]:
    from ultralytics import RTDETR, YOLO

    facts = {}
    for name, cls, yaml_name in (("yolov8n", YOLO, "yolov8n.yaml"), ("rtdetr-l", RTDETR, "rtdetr-l.yaml")):
        t0 = time.monotonic()
        f = cls(yaml_name).export(format="onnx", opset=opset, imgsz=imgsz, dynamic=False, simplify=False)
        shutil.move(f, out / f"{name}.onnx")
        facts[name] = {"export_s": round(time.monotonic() - t0, 1), "exporter": "ultralytics"}
    return facts


class EndToEnd:  # built lazily so that this file imports without torch
    @staticmethod
    def make(net, k: int = 100):  # type: ignore[no-untyped-def]
        import torch
        import torchvision

        class E2E(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
                y = self.net(x)
                y = y[0] if isinstance(y, list | tuple) else y  # [1, 4+nc, N]
                p = y[0].transpose(0, 1)
                c, wh = p[:, :2], p[:, 2:4]
                boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1)
                scores, classes = p[:, 4:].max(dim=1)
                keep = torchvision.ops.batched_nms(boxes, scores, classes, 0.7)[:k]
                pad = k - keep.shape[0]
                det_boxes = torch.nn.functional.pad(boxes[keep], (0, 0, 0, pad))[None]
                det_scores = torch.nn.functional.pad(scores[keep], (0, pad))[None]
                det_classes = torch.nn.functional.pad(classes[keep], (0, pad))[None].to(torch.int32)
                num = torch.full((1, 1), 1, dtype=torch.int32) * keep.shape[0]
                return num, det_boxes, det_scores, det_classes

        return E2E().eval()


def torch_models(out: Path, opset: int, imgsz: int) -> dict[str, dict]:
    import numpy as np
    import torch
    import torchvision
    from ultralytics import YOLO

    torch.manual_seed(0)
    facts = {}

    class TV(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
                weights=None, weights_backbone=None)

        def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
            d = self.m(list(x))[0]
            return d["boxes"], d["scores"], d["labels"]

    net = YOLO("yolov8n.yaml").model.eval()
    for name, model, names in (("ssdlite", TV().eval(), ["boxes", "scores", "labels"]),
                               ("yolov8n-e2e", EndToEnd.make(net),
                                ["num_dets", "det_boxes", "det_scores", "det_classes"])):
        x = torch.rand(1, 3, imgsz, imgsz)
        t0 = time.monotonic()
        torch.onnx.export(model, (x,), str(out / f"{name}.onnx"), opset_version=opset,
                          input_names=["images"], output_names=names, dynamo=False)
        facts[name] = {"export_s": round(time.monotonic() - t0, 1), "exporter": "torch.onnx.export"}
        with torch.no_grad():
            ref = [t.numpy() for t in model(x)]
        got = _ort_outputs(out / f"{name}.onnx", x.numpy())
        # NMS outputs come in score order, and random weights give near-equal scores whose
        # order differs between runtimes: compare each output's sorted values
        facts[name]["parity_sorted_max_abs"] = {
            k: float(np.abs(np.sort(r.astype("float64"), axis=None)
                            - np.sort(g.astype("float64"), axis=None)).max()) if r.size else 0.0
            for (k, g), r in zip(got.items(), ref, strict=True) if r.shape == g.shape}
        facts[name]["parity_shapes_equal"] = all(r.shape == g.shape for r, g in
                                                 zip(ref, got.values(), strict=True))
    return facts


def main(out_dir: str, opset: str, imgsz: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # Ultralytics writes next to the working directory
    facts = {**ultralytics_models(out, int(opset), int(imgsz)), **torch_models(out, int(opset), int(imgsz))}
    import numpy as np

    x = np.random.default_rng(0).random((1, 3, int(imgsz), int(imgsz)), dtype=np.float32)
    for name in facts:
        facts[name]["outputs"] = {k: list(v.shape) for k, v in _ort_outputs(out / f"{name}.onnx", x).items()}
    (out / "facts.json").write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
