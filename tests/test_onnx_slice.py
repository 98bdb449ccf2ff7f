"""The first vertical slice on real tools: a user's ONNX file + COCO dataset -> summary row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from conftest import ENVS, ORT_TOOLSET, snakemake, write_config
from helpers_onnx import const_detector, one_image_coco


def onnx_config(tmp: Path, model: Path, ann: Path, **model_over: object) -> dict:
    spec = {"source": "onnx", "path": str(model),
            "inputs": [{"name": "x", "dtype": "float32", "role": "image"}],
            "preprocess": {"size": [64, 64]},
            "decode": {"boxes": "boxes", "scores": "scores", "labels": "labels",
                       "box_format": "xywh", "coordinates": "normalized"}}
    spec.update(model_over)
    return {"envs_dir": str(ENVS),
            "dataset": {"name": "user", "source": "coco", "annotations": str(ann),
                        "images": str(ann.parent / "images")},
            "toolsets": {"ort1.20": ORT_TOOLSET},
            "models": {"user": spec},
            "matrix": [{"models": ["user"], "toolsets": ["ort1.20"], "opsets": [13]}]}


def test_onnx_file_to_summary_maps_labels_to_dataset_ids(tmp_path: Path):
    # GT: category 7 (the 3rd id), box x=50,y=20,w=100,h=50 on a 200x100 image.
    ann = one_image_coco(tmp_path / "data", [50, 20, 100, 50], 7)
    model = const_detector(tmp_path / "m.onnx", [0.25, 0.2, 0.5, 0.5], label=2)
    write_config(tmp_path, onnx_config(tmp_path, model, ann))
    snakemake(tmp_path)
    df = pd.read_csv(tmp_path / "results" / "summary.csv")
    row = df.iloc[0]
    assert row["status"] == "ok", row.to_dict()
    assert row["mode"] == "measured"
    assert row["AP"] > 0.99  # label index 2 -> category id 7, xywh normalized -> pixels
    cell = tmp_path / "results/user/ort1.20/opset13/none/fp32/onnxruntime"
    dets = json.loads((cell / "evaluate" / "detections.json").read_text())
    assert dets[0]["category_id"] == 7 and dets[0]["bbox"] == [50.0, 20.0, 100.0, 50.0]
    metrics = json.loads((cell / "evaluate" / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}
    exp = json.loads((tmp_path / "results/user/ort1.20/opset13/export/status.json").read_text())
    assert exp["data"]["opset"] == 13
    assert exp["data"]["inputs"] == [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert exp["data"]["op_histogram"]["ReduceMean"] == 1
    assert exp["tool_versions"]["onnxruntime"] == "1.20.1"


def test_jobs_use_this_workflows_code_not_another_installed_copy(tmp_path: Path):
    # another quantsweep first on PYTHONPATH (e.g. a second clone installed with pip -e)
    decoy = tmp_path / "decoy" / "quantsweep"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('decoy quantsweep imported')\n")
    ann = one_image_coco(tmp_path / "data", [50, 20, 100, 50], 7)
    model = const_detector(tmp_path / "m.onnx", [0.25, 0.2, 0.5, 0.5], label=2)
    write_config(tmp_path, onnx_config(tmp_path, model, ann))
    snakemake(tmp_path, env={"PYTHONPATH": str(decoy.parent)})
    row = pd.read_csv(tmp_path / "results" / "summary.csv").iloc[0]
    assert row["status"] == "ok", row.to_dict()


def test_contract_mismatch_lists_real_input_names(tmp_path: Path):
    ann = one_image_coco(tmp_path / "data", [50, 20, 100, 50], 7)
    model = const_detector(tmp_path / "m.onnx", [0.25, 0.2, 0.5, 0.5], label=2)
    cfg = onnx_config(tmp_path, model, ann,
                      inputs=[{"name": "input", "dtype": "float32", "role": "image"}])
    write_config(tmp_path, cfg)
    snakemake(tmp_path)  # a bad model is a failed row, not a crashed sweep
    row = pd.read_csv(tmp_path / "results" / "summary.csv").iloc[0]
    assert row["status"] == "failed" and row["stage"] == "export"
    assert row["reason_class"] == "contract_mismatch"
    assert "'input'" in row["reason"] and "['x']" in row["reason"]
    assert str(model) in row["reason"]


def test_not_an_onnx_file_is_a_classified_failure(tmp_path: Path):
    ann = one_image_coco(tmp_path / "data", [50, 20, 100, 50], 7)
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"this is not a protobuf at all \x00\xff")
    write_config(tmp_path, onnx_config(tmp_path, bad, ann))
    snakemake(tmp_path)
    row = pd.read_csv(tmp_path / "results" / "summary.csv").iloc[0]
    assert row["status"] == "failed" and row["reason_class"] == "invalid_model"
    assert str(bad) in row["reason"]
    ev = json.loads((tmp_path / "results/user/ort1.20/opset13/none/fp32/onnxruntime/evaluate/"
                     "metrics.json").read_text())
    assert ev["status"] == "skipped" and "AP" not in ev  # never looks like a measurement


def test_bad_annotation_file_stops_with_one_clear_error(tmp_path: Path):
    ann = one_image_coco(tmp_path / "data", [50, 20, 100, 50], 7)
    data = json.loads(ann.read_text())
    del data["images"]
    ann.write_text(json.dumps(data))
    model = const_detector(tmp_path / "m.onnx", [0.25, 0.2, 0.5, 0.5], label=2)
    write_config(tmp_path, onnx_config(tmp_path, model, ann))
    r = snakemake(tmp_path, check=False)
    assert r.returncode != 0
    assert f"{ann}: no 'images' list" in r.stderr + r.stdout
