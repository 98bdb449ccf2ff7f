"""Field report 000: a PaddleSlim-quantized detector evaluated with a float configuration (mAP 0);
only Paddle-TRT INT8 worked.

Reproduced with real packages: demo-paddle quantized by PaddleSlim 2.6 (Paddle 2.6.2) and run in
Paddle Inference's float CPU configuration, beside its Paddle-TRT INT8 cell. What differs from
the report: on the CPU, Paddle runs the Q/DQ ops in float, so AP does not collapse here (the
report's mAP 0 came from a GPU float configuration); the Paddle-TRT cell is skipped with Paddle's
own reason (a CPU wheel without TensorRT)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from conftest import PADDLESLIM_CELLS
from doctor_cli import codes, doctor


def test_doctor_names_the_int8_configuration(paddleslim_sweep: Path) -> None:
    rows = pd.read_csv(paddleslim_sweep / "results/summary.csv").set_index("cell")
    pi = rows.loc[f"{PADDLESLIM_CELLS}/paddle_inference"]
    assert pi["status"] == "ok" and pi["mode"] == "measured"
    assert ":quantized_on_float_backend" in pi["doctor"]  # the finding is in the row too
    trt = rows.loc[f"{PADDLESLIM_CELLS}/paddle_tensorrt"]
    assert trt["status"] == "skipped" and trt["reason_class"] == "missing_requirement"
    assert "not compiled with CUDA and TensorRT" in trt["reason"]

    _, rep, text = doctor(paddleslim_sweep, f"{PADDLESLIM_CELLS}/paddle_inference")
    (f,) = codes(rep)["quantized_on_float_backend"]
    assert f["seed"] == "000"
    assert "paddle_tensorrt" in f["fix"] and "use_calib_mode=False" in f["fix"]
    assert f["evidence"]["file"].endswith("paddle_inference/build/status.json")
    assert "field report 000" in text
    # the same quantized graph on ONNX Runtime (an INT8 backend) is not flagged
    _, rep, _ = doctor(paddleslim_sweep, f"{PADDLESLIM_CELLS}/onnxruntime")
    assert "quantized_on_float_backend" not in codes(rep)
