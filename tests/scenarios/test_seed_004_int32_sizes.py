"""Field report 004: an RT-DETR engine returns all-zero boxes because ``orig_target_sizes`` must be
int32 and int64 data was fed.

Reproduced on real ONNX Runtime with demo-torch's contract (``orig_target_sizes`` int32): int64
fed directly is refused by ONNX Runtime, and the runner converts per the binding's dtype and
records it. The GPU side (int64 bytes copied into TensorRT 8.6's int32 binding: zero heights)
runs through the TensorRT double. The doctor diagnoses all-zero boxes from the detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import trt_double
from conftest import tiny_config, write_config
from doctor_cli import codes, doctor
from helpers_onnx import detector, feeds

from quantsweep import paths
from quantsweep.backends import onnxruntime as ortb
from quantsweep.backends import tensorrt_api
from quantsweep.backends.tensorrt_plan import BuildRequest
from quantsweep.status import make_status, write_status


def int32_contract(tmp: Path) -> Path:
    m = onnx.load(str(detector(tmp / "det64.onnx")))
    m.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.INT32
    p = tmp / "det32.onnx"
    onnx.save(m, str(p))
    return p


def test_runners_bind_sizes_as_the_model_says(tmp_path: Path) -> None:
    model = int32_contract(tmp_path)
    f = feeds()  # orig_target_sizes as int64, the way a dataloader makes it
    with pytest.raises(Exception, match="(?i)int64|type"):
        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, f)
    r = ortb.runner(model, {})
    boxes = r.infer(f)["boxes"]
    assert vars(r.adapt.conversions["orig_target_sizes"]) == {
        "name": "orig_target_sizes", "fed": "int64", "bound": "int32"}
    assert (boxes[:, 1] > 0).all()
    # the GPU side: TensorRT 8.6 binds the int64 sizes of the original graph as int32
    with trt_double.installed("8.6.1.6"):
        info = tensorrt_api.build(BuildRequest(onnx=detector(tmp_path / "det64.onnx"),
                                               precision="fp32", trt_version="8.6.1.6",
                                               engine=tmp_path / "e.engine", batch=(1, 2, 4)),
                                  tmp_path / "b.log")
        run = tensorrt_api.Runner(info["engine"], {})
        good = run.infer(f)["boxes"]
        run.adapt = lambda x: x  # type: ignore[assignment]  # what the report's code did
        bad = run.infer(f)["boxes"]
    np.testing.assert_allclose(good, boxes, rtol=1e-5)
    assert (bad[:, 1] == 0).all() and not (good[:, 1] == 0).any()


def test_doctor_diagnoses_zero_boxes(tmp_path: Path) -> None:
    write_config(tmp_path, tiny_config())
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "width": 640, "height": 480, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 80],
                         "area": 8000, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    manifest = tmp_path / "resources/datasets/tiny/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"splits": {"val": {"annotations": str(ann)}}}))
    cells = {}
    for backend, box in (("zero", [0.0, 0.0, 0.0, 0.0]), ("fine", [12.0, 11.0, 98.0, 77.0]),
                         ("empty", None)):
        axes = {"model": "det", "toolset": "trt8.6", "opset": 13, "quantizer": "none",
                "precision": "fp32", "backend": backend}
        d = paths.fill(tmp_path / "results", "evaluate", "", **axes)
        d.mkdir(parents=True)
        (d / "detections.json").write_text(json.dumps(
            [] if box is None else
            [{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9 - 0.01 * k} for k in range(20)]))
        write_status(d / "status.json", make_status(
            "evaluate", paths.cell_id(**axes), "ok", artifacts={"detections": str(d / "detections.json")},
            data={"input_conversions": [{"name": "orig_target_sizes", "fed": "int64", "bound": "int32"}]}))
        cells[backend] = paths.cell_id(**axes)
    rc, rep, text = doctor(tmp_path, cells["zero"])
    (z,) = codes(rep)["zero_boxes"]
    assert rc == 1 and z["seed"] == "004" and "int32" in z["fix"]
    assert z["evidence"]["value"] == [0.0, 0.0, 0.0, 0.0]
    assert "input_converted" in codes(rep)
    rc, rep, _ = doctor(tmp_path, cells["fine"])
    assert rc == 0 and "zero_boxes" not in codes(rep)
    rc, rep, _ = doctor(tmp_path, cells["empty"])  # no detections: a finding, not a crash
    assert rc == 1 and "no_detections" in codes(rep)
