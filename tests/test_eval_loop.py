"""The evaluation loop on real exports (the session's tiny INT8 sweep): several runners in one
pass give each the detections it gives alone, and a decode error still fails the row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantsweep.backends.onnxruntime import runner
from quantsweep.config import load_config
from quantsweep.evaluate.loop import evaluate_runner, evaluate_runners
from quantsweep.job import ToolFailure

CELL = "results/demo-torch/torch2.13/opset13"


def _setup(root: Path) -> tuple[dict, dict, dict]:
    cfg = load_config(root / "config.yaml")
    spec = {"name": "demo-torch", **cfg["models"]["demo-torch"]}
    man = json.loads((root / "resources/datasets/tiny/manifest.json").read_text())
    return cfg, spec, man


@pytest.mark.slow
def test_runners_in_one_pass_give_what_each_gives_alone(int8_sweep: Path) -> None:
    cfg, spec, man = _setup(int8_sweep)
    q = json.loads((int8_sweep / CELL / "ort-qdq/quantize/status.json").read_text())
    fp32 = runner(int8_sweep / CELL / "export/model.onnx", {"threads": 1})
    int8 = runner(int8_sweep / q["artifacts"]["model"], {"threads": 1})  # relative to the workflow
    both = evaluate_runners({"fp32": fp32, "int8": int8}, spec, man, cfg["evaluate"])
    for key, r in (("fp32", fp32), ("int8", int8)):
        alone, stats = evaluate_runner(r, spec, man, cfg["evaluate"])
        assert both[key][0] == alone and len(alone) > 0
        assert both[key][1]["images"] == stats["images"] == 6
    assert both["fp32"][0] != both["int8"][0]  # two graphs, two sets of detections


@pytest.mark.slow
def test_a_decode_error_in_the_decode_thread_fails_the_row(int8_sweep: Path) -> None:
    cfg, spec, man = _setup(int8_sweep)
    spec = {**spec, "decode": {**spec["decode"], "boxes": "no_such_output"}}
    r = runner(int8_sweep / CELL / "export/model.onnx", {"threads": 1})
    with pytest.raises(ToolFailure) as exc:
        evaluate_runner(r, spec, man, cfg["evaluate"])
    assert exc.value.reason_class == "decode_error" and "no_such_output" in str(exc.value)
