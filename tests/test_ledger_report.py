"""The precision-loss ledger and the HTML report, on real ONNX Runtime graphs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from helpers_onnx import detector, feeds
from onnx import helper, numpy_helper

from quantsweep.report.html import render
from quantsweep.report.ledger import first_divergence, steps


def with_bad_qdq(src: Path, dst: Path, tensor: str, scale: float) -> Path:
    """``src`` with a Q/DQ pair on ``tensor`` (its consumers read the dequantized value)."""
    m = onnx.load(str(src))
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), "bad_s"),
                          numpy_helper.from_array(np.array(0, np.int8), "bad_z")])
    for n in g.node:
        n.input[:] = [f"{tensor}_dq" if i == tensor else i for i in n.input]
    at = next(k for k, n in enumerate(g.node) if tensor in n.output) + 1
    g.node.insert(at, helper.make_node("DequantizeLinear", [f"{tensor}_q", "bad_s", "bad_z"],
                                       [f"{tensor}_dq"], name="bad_dq"))
    g.node.insert(at, helper.make_node("QuantizeLinear", [tensor, "bad_s", "bad_z"],
                                       [f"{tensor}_q"], name="bad_q"))
    onnx.save(m, str(dst))
    return dst


def test_first_divergence_names_the_badly_quantized_tensor(tmp_path: Path) -> None:
    fp32 = detector(tmp_path / "fp32.onnx")
    fine = with_bad_qdq(fp32, tmp_path / "fine.onnx", "r", 0.05)    # a sane scale
    bad = with_bad_qdq(fp32, tmp_path / "bad.onnx", "r", 1e-4)      # saturates at 0.0127
    f = [feeds(2), feeds(1)]
    d = first_divergence(fp32, bad, f)
    assert d["first"]["tensor"] == "r" and d["first"]["op_type"] == "Relu"
    assert d["first"]["cosine"] < 0.99
    assert d["compared"] >= 4  # the conv before it was compared and did not diverge
    ok = first_divergence(fp32, fine, f)
    assert ok["first"] is None and ok["worst"]["cosine"] > 0.99


def summary_rows() -> pd.DataFrame:
    base = {"model": "m", "toolset": "t", "opset": 13, "framework_AP": 0.50, "doctor": "",
            "latency_ms": 10.0, "reason": "", "stage": "", "reason_class": ""}
    return pd.DataFrame([
        {**base, "cell": "m/t/opset13/none/fp32/onnxruntime", "quantizer": "none", "precision": "fp32",
         "backend": "onnxruntime", "status": "ok", "mode": "measured", "AP": 0.49},
        {**base, "cell": "m/t/opset13/ort-qdq/int8/onnxruntime", "quantizer": "ort-qdq",
         "precision": "int8", "backend": "onnxruntime", "status": "ok", "mode": "measured", "AP": 0.47,
         "latency_ms": 5.0},
        {**base, "cell": "m/t/opset13/ort-qdq/int8/tensorrt_sim", "quantizer": "ort-qdq",
         "precision": "int8", "backend": "tensorrt_sim", "status": "ok", "mode": "simulated",
         "AP": 0.45},
        {**base, "cell": "m/t/opset13/none/fp16/trtexec", "quantizer": "none", "precision": "fp16",
         "backend": "trtexec", "status": "failed", "mode": "skipped", "AP": None,
         "stage": "build", "reason_class": "out_of_memory", "reason": "the GPU ran out of memory",
         "doctor": "error:no_implementation"},
    ])


def test_ledger_steps_attribute_each_drop() -> None:
    s = {x["step"]: x for x in steps(summary_rows())}
    assert s["framework FP32 -> ONNX FP32"]["delta"] == -0.01
    assert s["ONNX FP32 -> INT8 ort-qdq on onnxruntime"]["delta"] == -0.02
    sim = s["ONNX FP32 -> INT8 ort-qdq on tensorrt_sim"]
    assert sim["delta"] == -0.04 and sim["mode"] == "simulated"
    assert len(s) == 3  # the failed cell has no AP: no step


def test_report_is_self_contained_and_labels_simulation() -> None:
    df = summary_rows()
    page = render(df, {"steps": steps(df), "divergence": {
        "m/t/opset13/ort-qdq/int8/onnxruntime": {"delta": -0.02, "first": {
            "tensor": "/backbone/conv3", "op_type": "Conv", "cosine": 0.97}}}})
    assert page.count("<svg") == 3  # heatmap, scatter, one waterfall
    assert "simulated" in page and "(sim)" in page
    assert "out_of_memory" in page and "error:no_implementation" in page and "/backbone/conv3" in page
    assert "<script" not in page
    assert not re.search(r"(src|href)=[\"']https?://", page)  # nothing fetched from a network


def test_a_ledger_of_framework_steps_only_says_so_under_its_heading() -> None:
    df = summary_rows()
    df = df[df.quantizer == "none"]  # FP32 cells only: the ledger's steps are framework -> ONNX
    led = steps(df)
    assert led and all(s["step"].startswith("framework") for s in led)
    page = render(df, {"steps": led, "divergence": {}})
    ledger_part = page.split("<h2>Precision-loss ledger</h2>", 1)[1].split("<h2>", 1)[0]
    assert "No quantization or engine steps in this sweep" in ledger_part
    assert "<svg" not in ledger_part
