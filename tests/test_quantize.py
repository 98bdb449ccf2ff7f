"""The ort-qdq quantizer on real ONNX Runtime: a QDQ graph with static scales, evaluated next to
its FP32 sibling; a calib request larger than the calib split is one clear failed row."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pandas as pd
from conftest import snakemake, tiny_config, write_config


def _cfg(calib_images: int) -> dict:
    cfg = tiny_config()
    cfg["matrix"] = [{"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13]},
                     {"models": ["demo-torch"], "toolsets": ["torch2.13"], "opsets": [13],
                      "quantizers": ["ort-qdq"], "precisions": ["int8"]}]
    cfg["quantize"] = {"calib_images": calib_images, "ort-qdq": {"op_types": ["Conv"]}}
    return cfg


def test_ort_qdq_int8_next_to_fp32_and_calib_too_large(tmp_path: Path):
    write_config(tmp_path, _cfg(2))
    snakemake(tmp_path)
    rows = pd.read_csv(tmp_path / "results/summary.csv").set_index("cell")
    int8 = rows.loc["demo-torch/torch2.13/opset13/ort-qdq/int8/onnxruntime"]
    fp32 = rows.loc["demo-torch/torch2.13/opset13/none/fp32/onnxruntime"]
    assert int8["status"] == fp32["status"] == "ok" and int8["mode"] == "measured"
    q = json.loads((tmp_path / "results/demo-torch/torch2.13/opset13/ort-qdq/quantize/"
                    "status.json").read_text())
    assert q["data"]["calib_images"] == 2 and q["data"]["calibrate_method"] == "MinMax"
    m = onnx.load(q["artifacts"]["model"])
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    dq_out = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    # every Conv reads its activation and its weight through a DequantizeLinear
    assert convs and all(c.input[0] in dq_out and c.input[1] in dq_out for c in convs)
    assert q["data"]["quantize_nodes"] > 0 and q["data"]["runtime_scales"] == 0
    assert q["data"]["dynamic_quantize_nodes"] == 0
    # the INT8 row carries its FP32 sibling's AP (the delta is what a user compares)
    assert int8["AP_delta_vs_fp32"] == round(int8["AP"] - fp32["AP"], 6)

    # more calib images than the split has: one failed row naming the key and the file
    write_config(tmp_path, _cfg(5))
    snakemake(tmp_path)
    rows = pd.read_csv(tmp_path / "results/summary.csv").set_index("cell")
    row = rows.loc["demo-torch/torch2.13/opset13/ort-qdq/int8/onnxruntime"]
    assert row["status"] == "failed" and row["reason_class"] == "calib_too_small"
    assert "quantize.calib_images is 5" in row["reason"] and "has 2 images" in row["reason"]
    assert "calib" in row["reason"] and ".json" in row["reason"]
    # the FP32 cell was not touched
    assert rows.loc["demo-torch/torch2.13/opset13/none/fp32/onnxruntime", "status"] == "ok"
