"""A quantized graph that a backend rejects ends as one classified failed row naming the model."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from helpers_onnx import detector

from quantsweep.backends import build
from quantsweep.job import Job, ToolFailure


def test_onnxruntime_rejecting_a_quantized_graph_is_a_failed_row(tmp_path: Path) -> None:
    m = onnx.load(str(detector(tmp_path / "qdq.onnx", qdq=True)))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    q.domain = "com.example.quant"  # a quantize op no ONNX Runtime provider implements
    m.opset_import.append(onnx.helper.make_opsetid("com.example.quant", 1))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    out = tmp_path / "build"
    out.mkdir()
    job = Job("build", "c", out, {"backend": "onnxruntime", "precision": "int8"},
              {"quantize": {"artifacts": {"model": str(bad)}, "data": {"int8": True}}})
    with pytest.raises(ToolFailure) as e:
        build.run(job)
    assert e.value.reason_class == "session_create"
    assert str(bad) in e.value.message and "com.example.quant" in e.value.message
