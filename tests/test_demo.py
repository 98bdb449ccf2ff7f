"""The demo chain on real tools: same seed -> same weights; both contracts as declared;
Paddle reproduces the torch network (1e-4), checked by the framework stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_PADDLE, NO_LATENCY, PADDLE_TOOLSET, snakemake, tiny_config, write_config


def _cfg() -> dict:
    cfg = tiny_config(latency=dict(NO_LATENCY))
    cfg["toolsets"]["paddle2.6-p2o1.3"] = PADDLE_TOOLSET
    cfg["models"]["demo-paddle"] = json.loads(json.dumps(DEMO_PADDLE))
    cfg["matrix"].append({"models": ["demo-paddle"], "toolsets": ["paddle2.6-p2o1.3"],
                          "opsets": [13]})
    # a contract that does not match the exported graph (a forum's "input" for "images")
    bad = json.loads(json.dumps(cfg["models"]["demo-torch"]))
    bad["inputs"][0]["name"] = "input"
    cfg["models"]["demo-torch-badcontract"] = bad
    cfg["matrix"].append({"models": ["demo-torch-badcontract"], "toolsets": ["torch2.13"],
                          "opsets": [13]})
    return cfg


def test_demo_determinism_and_contracts(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        write_config(d, _cfg())
    snakemake(a)
    rows = pd.read_csv(a / "results" / "summary.csv").set_index("model")
    bad = rows.loc["demo-torch-badcontract"]
    assert bad["status"] == "failed" and bad["reason_class"] == "contract_mismatch"
    assert "config models.demo-torch-badcontract" in bad["reason"]
    assert "declared input 'input'" in bad["reason"] and "'images'" in bad["reason"]
    rows = rows.drop(index="demo-torch-badcontract")
    assert (rows["status"] == "ok").all(), rows[["cell", "status", "reason"]].to_string()
    tr = json.loads((a / "resources/demo/train/status.json").read_text())
    # trained as configured: the default precision (auto) is bf16 autocast where the CPU has it
    # natively and float32 where bf16 would be emulated; the first round(0.8 * 2) steps small
    assert tr["data"]["precision_config"] == "auto"
    assert tr["data"]["precision"] == ("bfloat16" if tr["data"]["cpu_bf16"] else "float32")
    assert tr["data"]["input_sizes"] == {"steps_before": 2, "small": 160, "deploy": 320}
    # Paddle got the torch weights and reproduces the torch outputs
    fw = json.loads((a / "results/demo-paddle/paddle2.6-p2o1.3/framework/status.json").read_text())
    assert fw["data"]["parity"]["ok"] and fw["data"]["parity"]["hm_max_abs"] <= 1e-4
    # its framework evaluation runs the legacy program with oneDNN (the accuracy reference, 4x
    # faster than Paddle's plain CPU kernels) and scores what ONNX Runtime scores on its export
    fe = json.loads((a / "results/demo-paddle/paddle2.6-p2o1.3/framework/evaluate/status.json").read_text())
    assert fe["data"]["runner_settings"] == {"onednn": True}
    assert rows.loc["demo-paddle", "framework_AP"] == pytest.approx(rows.loc["demo-paddle", "AP"], abs=1e-3)
    exp = json.loads((a / "results/demo-paddle/paddle2.6-p2o1.3/opset13/export/status.json").read_text())
    assert [(i["name"], i["dtype"]) for i in exp["data"]["inputs"]] == [
        ("image", "float32"), ("im_shape", "float32"), ("scale_factor", "float32")]
    assert [o["dtype"] for o in exp["data"]["outputs"]] == ["float32", "int32"]
    assert exp["data"]["outputs"][0]["shape"][1] == 6
    exp = json.loads((a / "results/demo-torch/torch2.13/opset13/export/status.json").read_text())
    assert [(i["name"], i["dtype"]) for i in exp["data"]["inputs"]] == [
        ("images", "float32"), ("orig_target_sizes", "int32")]
    assert [o["name"] for o in exp["data"]["outputs"]] == ["labels", "boxes", "scores"]
    ev = json.loads((a / "results/demo-torch/torch2.13/opset13/none/fp32/onnxruntime/evaluate/"
                     "status.json").read_text())
    # the runner fed the int32 binding with int64 sizes converted losslessly, and said so
    assert {"name": "orig_target_sizes", "fed": "int64", "bound": "int32"} in ev["data"]["input_conversions"]
    # same seed, same weights (a second, independent run)
    snakemake(b, "resources/demo/train/status.json")
    tr_b = json.loads((b / "resources/demo/train/status.json").read_text())
    assert tr["data"]["weights_sha256"] == tr_b["data"]["weights_sha256"]


def test_an_empty_train_split_is_one_clear_error(tmp_path: Path) -> None:
    from quantsweep.demo.train import load_split_sizes
    from quantsweep.job import ToolFailure

    ann = tmp_path / "train.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    manifest = {"splits": {"train": {"annotations": str(ann), "images": str(tmp_path)}}}
    pre = {"resize": "stretch", "size": [320, 320], "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]}
    with pytest.raises(ToolFailure, match="the train split has no images"):
        load_split_sizes(manifest, "train", pre, 1, [1], [320, 224])


def test_images_loaded_on_threads_are_the_ones_loaded_in_order(tmp_path: Path) -> None:
    """The training images are decoded on the demo's threads into preallocated arrays: the
    arrays are the same, bit for bit, as one thread's, image i at row i."""
    from quantsweep.config import validate_config
    from quantsweep.dataset import generate_synthetic
    from quantsweep.demo.train import load_split_sizes

    cfg = validate_config(tiny_config())
    syn = cfg["dataset"]["synthetic"]
    m = generate_synthetic({**syn, "train": 9, "calib": 1, "val": 1}, "t", tmp_path)
    cats = [c["id"] for c in m["categories"]]
    pre = cfg["demo"]["preprocess"]
    one = load_split_sizes(m, "train", pre, len(cats), cats, [64, 96], threads=1)
    three = load_split_sizes(m, "train", pre, len(cats), cats, [64, 96], threads=3)
    assert [a.shape[0] for a in one[0]] == [9] * 4 and one[1][0].shape[2:] == (96, 96)
    for s1, s3 in zip(one, three, strict=True):
        for a, b in zip(s1, s3, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    assert not np.array_equal(one[0][0][0], one[0][0][1])  # rows are images, not one repeated
